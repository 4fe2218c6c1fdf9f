// W5 memory: N coroutines (100,000) all suspended on one event. Run with
// `node --expose-gc`. We measure, after a full GC both times:
//   - heap bytes per coroutine: V8 heapUsed while all N are suspended, minus
//     heapUsed before any was created, divided by N;
//   - RSS bytes per coroutine: the same with the resident set size (coarser:
//     it includes V8's spare heap pages, so it moves in steps);
//   - release time: from setting the event (resolving the promise) until
//     every coroutine has finished, and we know it.
// We check every coroutine resumed and returned its index.
//
//   tinyio    `yield event.wait()` on one `tinyio.Event`, gathered by the root;
//             a sibling coroutine measures and calls `event.set()`
//   native    `await promise` on one promise, `Promise.all`; `resolve()`
//   effection `yield* operation` of one `withResolvers()`, each in a `spawn`ed
//             task; `resolve()`, then the root joins all tasks
//   co        `yield promise` on one native promise, in `co(...)`

import * as tinyio from "../tinyio.ts";
import { run, spawn, withResolvers, type Operation, type Task } from "effection";
import co from "co";
import { check, gc, intFlag, main, now, type Metrics } from "./common.ts";

// What each contender hands back: the sum of the results, the memory while
// all were suspended, and when the release started (ms, `now()`).
type Sample = { heap: number; rss: number };
type Outcome = { sum: number; suspended: Sample; releasedAt: number };

// (Node 20 has no Promise.withResolvers.)
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

function sample(): Sample {
  gc();
  const { heapUsed, rss } = process.memoryUsage();
  return { heap: heapUsed, rss };
}

function tinyioMemory(n: number): Outcome {
  const event = new tinyio.Event();
  let suspended: Sample | undefined;
  let releasedAt = 0;
  function* waiter(i: number): tinyio.Coro<number> {
    yield event.wait();
    return i;
  }
  // Runs after every waiter has started and yielded (the run queue is FIFO).
  function* releaser(): tinyio.Coro<void> {
    yield;
    suspended = sample();
    releasedAt = now();
    event.set();
  }
  function* root(): tinyio.Coro<number> {
    const waiters = Array.from({ length: n }, (_, i) => waiter(i));
    const out: number[] = yield [...waiters, releaser()];
    let sum = 0;
    for (let i = 0; i < n; i++) sum += out[i];
    return sum;
  }
  const sum = new tinyio.Loop().run(root());
  return { sum, suspended: suspended!, releasedAt };
}

async function nativeMemory(n: number): Promise<Outcome> {
  const { promise, resolve } = deferred();
  async function waiter(i: number): Promise<number> {
    await promise;
    return i;
  }
  const all = Promise.all(Array.from({ length: n }, (_, i) => waiter(i)));
  const suspended = sample();
  const releasedAt = now();
  resolve();
  const out = await all;
  let sum = 0;
  for (const x of out) sum += x;
  return { sum, suspended, releasedAt };
}

async function effectionMemory(n: number): Promise<Outcome> {
  return await run(function* (): Operation<Outcome> {
    const ready = withResolvers<void>();
    function* waiter(i: number): Operation<number> {
      yield* ready.operation;
      return i;
    }
    const tasks: Task<number>[] = [];
    for (let i = 0; i < n; i++) tasks.push(yield* spawn(() => waiter(i)));
    // `spawn` starts a task when the parent next yields: let them all run
    // to their suspension point first.
    yield* yieldOnce();
    const suspended = sample();
    const releasedAt = now();
    ready.resolve();
    let sum = 0;
    for (const task of tasks) sum += yield* task;
    return { sum, suspended, releasedAt };
  });
}
function* yieldOnce(): Operation<void> {
  const { operation, resolve } = withResolvers<void>();
  setImmediate(resolve);
  yield* operation;
}

async function coMemory(n: number): Promise<Outcome> {
  const { promise, resolve } = deferred();
  function* waiter(i: number): Generator<unknown, number, unknown> {
    yield promise;
    return i;
  }
  const all = Promise.all(Array.from({ length: n }, (_, i) => co(waiter, i)));
  const suspended = sample();
  const releasedAt = now();
  resolve();
  const out = await all;
  let sum = 0;
  for (const x of out) sum += x;
  return { sum, suspended, releasedAt };
}

function measure(body: (n: number) => Outcome | Promise<Outcome>) {
  return async (f: Record<string, string>): Promise<Metrics> => {
    const n = intFlag(f, "n", 100_000);
    const before = sample();
    const { sum, suspended, releasedAt } = await body(n);
    const releaseMs = now() - releasedAt;
    check(sum === (n * (n - 1)) / 2, `sum of results ${sum}, expected ${(n * (n - 1)) / 2}`);
    return {
      heapBytesPerCoro: (suspended.heap - before.heap) / n,
      rssBytesPerCoro: (suspended.rss - before.rss) / n,
      releaseMs,
    };
  };
}

await main({
  tinyio: measure(tinyioMemory),
  native: measure(nativeMemory),
  effection: measure(effectionMemory),
  co: measure(coMemory),
});
