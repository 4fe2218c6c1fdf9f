// The functions piscina runs (piscina needs a module file, not a function).
// Loaded in piscina's workers, which inherit `--import tsx` from the parent.

/** W4: the round trip's payload. */
export default function addOne(x: number): number {
  return x + 1;
}

/** W4b: block the thread for `ms` milliseconds (busy-wait), return `ms`. */
export function block(ms: number): number {
  const end = performance.now() + ms;
  while (performance.now() < end);
  return ms;
}
