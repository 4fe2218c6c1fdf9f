// bench/soak.ts: a long run, to see what only shows over time.
//
//     npm run soak            (node --import tsx bench/soak.ts)
//     SOAK_SCALE=0.1 npm run soak   (a tenth of the work, for a quick look)
//
// Not part of `npm test`: it takes a few minutes. Four phases, each checking
// its answers and ending with the loop's bookkeeping empty:
//
// 1. a million coroutines through one Loop, run after run: gathers, diamonds
//    (every child also yielded by a shared sibling), background Sets, sleeps,
//    events, semaphores, timeouts, and a failing run now and then;
// 2. thread calls cancelled mid-flight thousands of times: async calls that
//    settle when their signal aborts, sync calls that must be terminated
//    after the grace period, and crashes while calls run;
// 3. thousands of toPromise runs, many at once, sharing one AbortSignal;
// 4. a last thread call and run, to show the pool and loop still work.
//
// It reports the heap (after a full GC) and RSS before and after each phase,
// and every warning the process emitted. At the end, nothing may keep the
// process alive: it must exit by itself at once (see the last line).

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import * as tinyio from "../tinyio.ts";

type Coro<R = any> = tinyio.Coro<R>;

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const scale = Number(process.env.SOAK_SCALE ?? 1);

const warnings: string[] = [];
process.on("warning", (w) => warnings.push(`${w.name}: ${w.message}`));

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
async function memory(): Promise<{ heap: number; rss: number }> {
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
  const { heapUsed, rss } = process.memoryUsage();
  return { heap: heapUsed, rss };
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`soak: ${what}`);
}

function checkEmpty(loop: tinyio.Loop, after: string): void {
  check(loop.live === 0 && loop.queue.length === 0 && loop.timers.length === 0 && loop.crash === null, `the loop's bookkeeping is not empty after ${after}`);
}

async function phase(name: string, fn: () => Promise<string> | string): Promise<void> {
  const before = await memory();
  const start = performance.now();
  const summary = await fn();
  const seconds = (performance.now() - start) / 1000;
  const after = await memory();
  console.log(`${name}: ${summary}`);
  console.log(`  ${seconds.toFixed(1)} s; heap ${mb(before.heap)} -> ${mb(after.heap)} (${after.heap >= before.heap ? "+" : ""}${mb(after.heap - before.heap)}), rss ${mb(before.rss)} -> ${mb(after.rss)}`);
}

// Phase 1: a million coroutines
// -----------------------------

const shared = new tinyio.Semaphore(8);

function* leaf(i: number): Coro<number> {
  if (i % 3 === 0) yield;
  if (i % 50 === 0) yield tinyio.sleep(0);
  return i;
}

// `width` leaves, each yielded twice: by the gather and by `watcher`
// (diamonds); some through a semaphore, some in the background, one timed
// out, and an event handed between two of them.
function* wave(base: number, width: number, fail: boolean): Coro<number> {
  const leaves = Array.from({ length: width }, (_, k) => leaf(base + k));
  const ready = new tinyio.Event();
  function* watcher(): Coro<number> {
    let sum = 0;
    for (const v of (yield leaves) as number[]) sum += v;
    return sum;
  }
  function* gated(): Coro<number> {
    using _ = yield* shared.acquire();
    yield;
    return 1;
  }
  function* setter(): Coro<void> {
    yield;
    ready.set();
  }
  function* slow(): Coro<void> {
    yield new tinyio.Event().wait(); // until the timeout
  }
  function* failing(): Coro<never> {
    yield;
    throw new Error("planned failure");
  }
  yield new Set([setter()]);
  function* permits4(): Coro<number[]> {
    return yield Array.from({ length: 4 }, gated);
  }
  const [sum, again, permits, timedOut]: [number, number, number[], [unknown, boolean]] = yield [watcher(), watcher(), permits4(), tinyio.timeout(slow(), 1)];
  yield ready.wait();
  if (fail) yield failing();
  check(sum === again && timedOut[1] === false && permits.length === 4, "a wave computed the wrong answer");
  return width + 12; // the coroutines it ran: its leaves, and a dozen around them
}

async function millionCoroutines(): Promise<string> {
  const loop = new tinyio.Loop();
  const width = 1000;
  const runs = Math.round(1000 * scale);
  let coroutines = 0;
  let failures = 0;
  for (let r = 0; r < runs; r++) {
    const fail = r % 97 === 96;
    try {
      coroutines += loop.run(wave(r * width, width, fail));
      check(!fail, "a failing run returned");
    } catch (error) {
      check(fail && (error as Error).message === "planned failure", `run ${r} threw ${String(error)}`);
      failures++;
      coroutines += width;
    }
    checkEmpty(loop, `run ${r}`);
  }
  // One run holding a hundred thousand coroutines at once.
  const many = Math.round(100_000 * scale);
  const t = performance.now();
  function* all(): Coro<number> {
    return ((yield Array.from({ length: many }, (_, i) => leaf(i))) as number[]).length;
  }
  check(loop.run(all()) === many, "the big gather lost results");
  checkEmpty(loop, "the big gather");
  return `${runs} runs on one loop (${failures} failing) plus one run of ${many} coroutines at once: ~${((coroutines + many) / 1e6).toFixed(2)} million coroutines; the big gather took ${(performance.now() - t).toFixed(0)} ms`;
}

// Phase 2: threads cancelled mid-flight
// -------------------------------------

function spin(ms: number): number {
  const end = Date.now() + ms;
  while (Date.now() < end);
  return ms;
}

async function sleepy(this: tinyio.ThreadContext, ms: number): Promise<number> {
  const signal = this.signal;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), reject(signal.reason)));
  });
  return ms;
}

async function cancelledThreads(): Promise<string> {
  const loop = new tinyio.Loop();
  const pool = new tinyio.ThreadPool(4);
  const asyncCancels = Math.round(3000 * scale);
  const syncCancels = Math.round(120 * scale);
  const crashes = Math.round(100 * scale);
  let done = 0;
  // Async calls: their signal aborts, they settle at once; 4 at a time.
  function* asyncBatch(n: number): Coro<void> {
    const results: [unknown, boolean][] = yield Array.from({ length: n }, () => tinyio.timeout(pool.runInThread(sleepy, 10_000), 5));
    check(results.every(([, ok]) => !ok), "an async thread call was not cancelled");
    done += n;
  }
  for (let k = 0; k < asyncCancels; k += 4) {
    loop.run(asyncBatch(Math.min(4, asyncCancels - k)));
    checkEmpty(loop, "async cancellations");
  }
  // Sync calls: terminated after the grace period; 4 at a time.
  function* syncBatch(n: number): Coro<void> {
    const results: [unknown, boolean][] = yield Array.from({ length: n }, () => tinyio.timeout(pool.runInThread(spin, 10_000), 5));
    check(results.every(([, ok]) => !ok), "a sync thread call was not cancelled");
    done += n;
  }
  for (let k = 0; k < syncCancels; k += 4) loop.run(syncBatch(Math.min(4, syncCancels - k)));
  // Crashes while calls of both kinds run, in the default pool.
  function* crash(): Coro<void> {
    function* boom(): Coro<never> {
      yield tinyio.sleep(3);
      throw new Error("crash");
    }
    yield [tinyio.runInThread(sleepy, 10_000), tinyio.runInThread(spin, 30), boom()];
  }
  for (let k = 0; k < crashes; k++) {
    try {
      loop.run(crash());
      check(false, "a crash did not crash");
    } catch (error) {
      check((error as Error).message === "crash", `a crash threw ${String(error)}`);
    }
    checkEmpty(loop, "a crash");
    done++;
  }
  // The pools still answer.
  function* answers(): Coro<number[]> {
    return yield [pool.runInThread(spin, 1), tinyio.runInThread(spin, 2)];
  }
  check(JSON.stringify(loop.run(answers())) === "[1,2]", "a pool no longer answers");
  return `${asyncCancels} async and ${syncCancels} sync thread calls cancelled mid-flight, ${crashes} crashes with calls running (${done} in all)`;
}

// Phase 3: toPromise, many at once, one shared signal
// ---------------------------------------------------

async function manyPromises(): Promise<string> {
  const controller = new AbortController();
  const runs = Math.round(10_000 * scale);
  const concurrency = 50;
  let ok = 0;
  function* job(i: number): Coro<number> {
    yield tinyio.sleep(i % 3);
    const v: number = yield tinyio.fromPromise(Promise.resolve(i));
    if (i % 101 === 100) throw new Error("planned");
    return v;
  }
  for (let k = 0; k < runs; k += concurrency) {
    const outcomes = await Promise.allSettled(Array.from({ length: Math.min(concurrency, runs - k) }, (_, j) => tinyio.toPromise(job(k + j), { signal: controller.signal })));
    for (const [j, o] of outcomes.entries()) {
      const i = k + j;
      check(i % 101 === 100 ? o.status === "rejected" : o.status === "fulfilled" && o.value === i, `toPromise run ${i} gave ${JSON.stringify(o)}`);
      ok++;
    }
  }
  return `${ok} toPromise runs, ${concurrency} at a time, all sharing one AbortSignal`;
}

console.log(`tinyio soak (scale ${scale}), Node ${process.version}`);
await phase("1. a million coroutines", millionCoroutines);
await phase("2. threads cancelled mid-flight", cancelledThreads);
await phase("3. toPromise", manyPromises);
await phase("4. still alive", () => {
  function* last(): Coro<number> {
    return yield tinyio.runInThread((x: number) => x + 1, 41);
  }
  check(new tinyio.Loop().run(last()) === 42, "the last run failed");
  return "a last thread call and run work";
});
console.log(warnings.length === 0 ? "warnings: none" : `warnings (${warnings.length}):\n${[...new Set(warnings)].map((w) => `  ${w}`).join("\n")}`);
console.log(`active resources: ${JSON.stringify(process.getActiveResourcesInfo())}`);
const end = performance.now();
process.on("exit", () => console.log(`exited ${(performance.now() - end).toFixed(0)} ms after the last line: nothing kept it alive`));
