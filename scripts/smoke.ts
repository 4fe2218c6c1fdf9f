// scripts/smoke.ts: the whole API once, as a plain program (no test runner),
// in erasable TypeScript only (no `using`), so that any runtime can run it:
//
//     node --import tsx scripts/smoke.ts                  (Node 20)
//     node --experimental-strip-types scripts/smoke.ts    (Node 22)
//     node scripts/smoke.ts                               (Node 24)
//     bun scripts/smoke.ts
//     deno run -A scripts/smoke.ts
//
// Prints `ok <name>` or `FAIL <name>: <why>` per check, then `done <ms>`, and
// exits with status 1 if anything failed. scripts/runtimes.ts runs it on each
// runtime and also checks that it exits at once after `done`.

import * as tinyio from "../tinyio.ts";

type Coro<R = any> = tinyio.Coro<R>;
let failures = 0;

function report(name: string, error?: unknown): void {
  if (error === undefined) console.log(`ok ${name}`);
  else {
    failures++;
    console.log(`FAIL ${name}: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
  }
}

function expectEqual(actual: unknown, expected: unknown): void {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  if (a !== e) throw new Error(`got ${a}, expected ${e}`);
}

async function check(name: string, fn: () => unknown): Promise<void> {
  try {
    await fn();
    report(name);
  } catch (error) {
    report(name, error);
  }
}

const run = <R>(coro: Coro<R>, options?: tinyio.RunOptions): R => new tinyio.Loop().run(coro, options);
const thrown = (fn: () => unknown): unknown => {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error("expected an error");
};

function* addOne(x: number, ms = 5): Coro<number> {
  yield tinyio.sleep(ms);
  return x + 1;
}

await check("run: gather, sleep, diamond, background Set, typed all", () => {
  let runs = 0;
  function* shared(): Coro<number> {
    runs++;
    yield;
    return 10;
  }
  const s = shared();
  function* main(): Coro<number[]> {
    yield new Set([s]);
    const [a, b]: number[] = yield [addOne(1), addOne(2)];
    const [c, d] = yield* tinyio.all([s, addOne(3)]);
    return [a, b, c, d, (yield s) as number, runs];
  }
  expectEqual(run(main()), [2, 3, 10, 4, 10, 1]);
});

await check("errors: the original error, CancelledError in others, AggregateError with exceptionGroup", () => {
  const log: string[] = [];
  const boom = new Error("boom");
  function* waiter(): Coro<void> {
    try {
      yield tinyio.sleep(1000);
    } catch (error) {
      log.push((error as Error).name);
      throw error;
    }
  }
  function* fails(): Coro<never> {
    yield;
    throw boom;
  }
  function* main(): Coro<void> {
    yield [waiter(), fails()];
  }
  if (thrown(() => run(main())) !== boom) throw new Error("not the original error");
  const group = thrown(() => run(main(), { exceptionGroup: true }));
  if (!(group instanceof AggregateError) || group.errors[0] !== boom) throw new Error("no AggregateError");
  expectEqual(log, ["CancelledError", "CancelledError"]);
});

await check("Deadlock and Cycle detected", () => {
  function* stuck(): Coro<void> {
    yield new tinyio.Event().wait();
  }
  expectEqual(/Deadlock/.test((thrown(() => run(stuck())) as Error).message), true);
  const self: { coro?: Coro } = {};
  function* selfish(): Coro<void> {
    yield self.coro!;
  }
  self.coro = selfish();
  expectEqual(/Cycle detected/.test((thrown(() => run(self.coro!)) as Error).message), true);
});

await check("time: timeout on time and late", () => {
  function* main(): Coro<unknown[]> {
    return [yield tinyio.timeout(addOne(1), 1000), yield tinyio.timeout(addOne(1, 1000), 10)];
  }
  expectEqual(run(main()), [[2, true], [null, false]]);
});

await check("sync: Event, Semaphore, Lock, Barrier, asCompleted", () => {
  const ready = new tinyio.Event();
  const sem = new tinyio.Semaphore(2);
  const barrier = new tinyio.Barrier(2);
  let holders = 0;
  let most = 0;
  function* job(i: number): Coro<number> {
    const permit: tinyio.Release = yield* sem.acquire();
    try {
      most = Math.max(most, ++holders);
      yield tinyio.sleep(2);
    } finally {
      holders--;
      permit.release();
    }
    return i;
  }
  function* main(): Coro<unknown[]> {
    yield new Set([(function* () { yield tinyio.sleep(2); ready.set(); })()]);
    yield ready.wait();
    const jobs = yield [job(1), job(2), job(3), job(4)];
    const arrivals = yield [barrier.wait(), barrier.wait()];
    const order: number[] = [];
    for (const next of (yield tinyio.asCompleted([addOne(29, 30), addOne(9, 10)])) as Iterable<Coro<number>>) order.push(yield next);
    const lock = new tinyio.Lock();
    const permit: tinyio.Release = yield lock.acquire();
    permit.release();
    return [jobs, most, arrivals, order];
  }
  expectEqual(run(main()), [[1, 2, 3, 4], 2, [0, 1], [10, 30]]);
});

await check("threads: sync, async, require() and import() in fn", () => {
  function* main(): Coro<unknown> {
    return yield [
      tinyio.runInThread((n: number) => n * 2, 21),
      tinyio.runInThread(async (n: number) => (await new Promise((r) => setTimeout(r, 5)), n + 1), 1),
      tinyio.runInThread(() => require("node:worker_threads").isMainThread),
      tinyio.runInThread(async () => (await import("node:worker_threads")).isMainThread),
      new tinyio.ThreadPool(2).map((x: number) => x * x, [1, 2, 3]),
    ];
  }
  expectEqual(run(main()), [42, 2, false, false, [1, 4, 9]]);
});

await check("threads: an error keeps its name; process.exit and a late uncaught error are errors, not hangs", () => {
  function* caught(fn: () => unknown): Coro<string> {
    try {
      yield* tinyio.runInThread(fn);
      return "no error";
    } catch (error) {
      return `${(error as Error).name}: ${(error as Error).message}`;
    }
  }
  function* main(): Coro<string[]> {
    return yield [
      caught(() => { throw new RangeError("in the thread"); }),
      caught(() => process.exit(3)),
      caught(() => new Promise(() => setTimeout(() => { throw new Error("late"); }, 5))),
    ];
  }
  const [range, exit, late] = run(main());
  expectEqual([range, /code 3/.test(exit), late], ["RangeError: in the thread", true, "Error: late"]);
});

await check("threads: cancelled mid-flight, async settles on abort, sync is terminated", () => {
  async function polite(this: tinyio.ThreadContext): Promise<string> {
    const signal = this.signal;
    return new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
  }
  function spin(): void {
    for (;;);
  }
  function* main(): Coro<unknown> {
    return yield [tinyio.timeout(tinyio.runInThread(polite), 20), tinyio.timeout(tinyio.runInThread(spin), 20)];
  }
  const start = Date.now();
  expectEqual(run(main()), [[null, false], [null, false]]);
  if (Date.now() - start > 3000) throw new Error(`took ${Date.now() - start} ms`);
});

await check("toPromise: fromPromise, Node timers run meanwhile, abort signal", async () => {
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 1);
  function* main(): Coro<number> {
    yield tinyio.sleep(30);
    return (yield tinyio.fromPromise(Promise.resolve(41))) + 1;
  }
  const value = await tinyio.toPromise(main());
  clearInterval(ticker);
  expectEqual([value, ticks > 0], [42, true]); // (any tick at all: a loaded machine may give few)
  const controller = new AbortController();
  const reason = new Error("stop");
  setTimeout(() => controller.abort(reason), 10);
  function* forever(): Coro<void> {
    yield new tinyio.Event().wait();
  }
  const error = await tinyio.toPromise(forever(), { signal: controller.signal }).catch((e: unknown) => e);
  if (error !== reason) throw new Error("not the signal's reason");
});

await check("isolate and copy", () => {
  function* fails(): Coro<never> {
    yield;
    throw new Error("contained");
  }
  function* main(): Coro<unknown[]> {
    const [error, ok] = yield tinyio.isolate(fails());
    const c: Coro<number> = yield tinyio.copy(addOne(6));
    function* inner(): Coro<number> {
      return (yield c) * 6;
    }
    return [(error as Error).message, ok, yield tinyio.isolate(inner())];
  }
  expectEqual(run(main()), ["contained", false, [42, true]]);
});

// The last line runs a thread, so that an exit at once shows no worker is left.
function* last(): Coro<number> {
  return yield tinyio.runInThread((x: number) => x + 1, 1);
}
await check("a last thread call", () => expectEqual(run(last()), 2));
console.log(`done ${Date.now()}`);
if (failures > 0) process.exitCode = 1;
