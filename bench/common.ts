// Shared helpers of the workload scripts (bench/w*.ts).
//
// Each workload script is run by bench/main.ts in a fresh child process, as
//
//     node --import tsx bench/w1-gather.ts --contender=tinyio --n=10000
//
// It runs ONE contender once, checks the answer, and prints ONE line of JSON
// with its measurements on stdout (the last line; anything before it is
// ignored). A wrong answer throws, which exits the child with code 1, and
// bench/main.ts then fails the whole run.

/** The command-line flags `--key=value` (or `--key`, meaning "true"). */
export function flags(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const arg of process.argv.slice(2)) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(arg);
    if (m) out[m[1]] = m[2] ?? "true";
  }
  return out;
}

/** A flag as an integer; `1e5` and `100_000` are accepted. */
export function intFlag(f: Record<string, string>, name: string, fallback?: number): number {
  const raw = f[name];
  if (raw === undefined) {
    if (fallback === undefined) throw new Error(`missing flag --${name}`);
    return fallback;
  }
  const n = Number(raw.replaceAll("_", ""));
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number, got ${raw}`);
  return n;
}

/** What a measurement is: a number, or a word such as "overflow". */
export type Metrics = Record<string, number | string>;

/** Prints the measurements as the JSON line bench/main.ts reads. */
export function emit(metrics: Metrics): void {
  process.stdout.write(JSON.stringify(metrics) + "\n");
}

/** A correctness check. A failed check fails the child, and so the run. */
export function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`CHECK FAILED: ${what}`);
}

/** A seeded pseudo-random generator in [0, 1) (Park-Miller), the same sequence for every contender. */
export function seeded(seed: number): () => number {
  let s = seed % 2147483647;
  if (s <= 0) s += 2147483646;
  return () => (s = (s * 16807) % 2147483647) / 2147483647;
}

/** Milliseconds, high resolution. */
export const now = (): number => performance.now();

/** CPU time (user + system) in ms since `since`. */
export function cpuMs(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
}

/** Full garbage collection; the child must run with `--expose-gc`. */
export function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g === undefined) throw new Error("run with node --expose-gc");
  g();
  g();
}

/**
 * Runs the contender named by `--contender` from `table`, then prints its
 * measurements. Errors (failed checks included) exit with code 1.
 */
export async function main(table: Record<string, (f: Record<string, string>) => Metrics | Promise<Metrics>>): Promise<void> {
  const f = flags();
  const run = table[f.contender];
  if (run === undefined) throw new Error(`unknown --contender=${f.contender}; one of ${Object.keys(table).join(", ")}`);
  try {
    emit(await run(f));
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
  // Pools, timers and workers must not keep us alive; exit explicitly.
  process.exit(0);
}
