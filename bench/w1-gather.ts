// W1 gather-yield: a root gathers N children; each child pauses K times
// (gives the others a turn), then returns its index. We check the sum of
// the indices and report the wall time per pause-step, wall / (N * K).
//
// What "pause" means per contender:
//   tinyio    `yield;`                   (back of the run queue)
//   native    `await null;`              (one microtask hop)
//   effection `yield* pause`, an action that resolves at once (back of the
//             reducer's queue: effection's cheapest hand-over)
//   co        `yield Promise.resolve()`  (co rejects `yield null`)
//   floor     a bare `yield;`, the generators stepped round-robin by a plain
//             loop over an array: no event loop at all, the physical floor
//
// A small warm-up run (N=1,000) comes first, so that we time steady-state code
// rather than the JIT's first tiers.

import * as tinyio from "../tinyio.ts";
import { action, all, run, type Operation } from "effection";
import co from "co";
import { check, intFlag, main, now, type Metrics } from "./common.ts";

type Gather = (n: number, k: number) => Promise<number[]> | number[];

// tinyio: plain generators; the loop runs synchronously.
function* tinyChild(i: number, k: number): tinyio.Coro<number> {
  for (let j = 0; j < k; j++) yield;
  return i;
}
function* tinyRoot(n: number, k: number): tinyio.Coro<number[]> {
  return yield Array.from({ length: n }, (_, i) => tinyChild(i, k));
}
const tinyioGather: Gather = (n, k) => new tinyio.Loop().run(tinyRoot(n, k));

// native: async functions, Promise.all.
async function nativeChild(i: number, k: number): Promise<number> {
  for (let j = 0; j < k; j++) await null;
  return i;
}
const nativeGather: Gather = (n, k) => Promise.all(Array.from({ length: n }, (_, i) => nativeChild(i, k)));

// effection: `all` spawns each child in its own scope.
const pause: Operation<void> = action<void>((resolve) => {
  resolve();
  return () => {};
});
function* effChild(i: number, k: number): Operation<number> {
  for (let j = 0; j < k; j++) yield* pause;
  return i;
}
const effectionGather: Gather = (n, k) => run(() => all(Array.from({ length: n }, (_, i) => effChild(i, k))));

// co: generators yielding promises; an array yielded is a Promise.all.
const resolved = Promise.resolve();
function* coChild(i: number, k: number): Generator<unknown, number, unknown> {
  for (let j = 0; j < k; j++) yield resolved;
  return i;
}
const coGather: Gather = (n, k) => co(function* () {
  return (yield Array.from({ length: n }, (_, i) => co(coChild, i, k))) as number[];
});

// floor: no loop at all. N bare generators, each yielding K times, stepped
// round-robin through an array until all are done: the cheapest possible
// pause-step for a generator, which any loop built on generators pays too.
function* floorChild(i: number, k: number): Generator<undefined, number, undefined> {
  for (let j = 0; j < k; j++) yield;
  return i;
}
const floorGather: Gather = (n, k) => {
  const out = new Array<number>(n);
  let queue = Array.from({ length: n }, (_, i) => ({ i, g: floorChild(i, k) }));
  while (queue.length > 0) {
    const next: typeof queue = [];
    for (const item of queue) {
      const step = item.g.next();
      if (step.done) out[item.i] = step.value;
      else next.push(item);
    }
    queue = next;
  }
  return out;
};

function measure(gather: Gather) {
  return async (f: Record<string, string>): Promise<Metrics> => {
    const n = intFlag(f, "n");
    const k = intFlag(f, "k", 100);
    await gather(1000, k); // warm-up: 100,000 steps
    const t0 = now();
    const out = await gather(n, k);
    const wall = now() - t0;
    // Every index once: the sum is n(n-1)/2, and results keep their order.
    check(out.length === n, `got ${out.length} results, expected ${n}`);
    let sum = 0;
    for (const x of out) sum += x;
    check(sum === (n * (n - 1)) / 2, `sum of indices ${sum}, expected ${(n * (n - 1)) / 2}`);
    check(out[n - 1] === n - 1, "results out of order");
    return { nsPerStep: (wall * 1e6) / (n * k), wallMs: wall };
  };
}

await main({
  tinyio: measure(tinyioGather),
  native: measure(nativeGather),
  effection: measure(effectionGather),
  co: measure(coGather),
  floor: measure(floorGather),
});
