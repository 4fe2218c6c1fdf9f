// The specs of tinyio's bridges to the world outside one loop: threads
// (worker_threads), promises (Node's own event loop) and isolation (a nested
// loop). One `describe` per section of the contract (API.md), in its order,
// and one `it` per documented behaviour. The core sections live in
// tinyio.test.ts.
//
// Prefer a log of who ran when over a stopwatch. Where time must be measured
// (concurrency of threads, "exits at once", "no hang"), margins are wide
// enough to survive a loaded machine and narrow enough to fail if the
// behaviour is wrong (for example, gathered calls that run one after another).
//
// Some specs run a small script in a child `node --import tsx`, since "the
// process exits" can only be seen from outside. The script is written under
// node_modules/.cache/bridge-test/ (inside the repository, so that `tsx`
// resolves) and imports tinyio.ts by absolute path.
//
// Run: node --import tsx --test --test-reporter=spec bridge.test.ts

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as tinyio from "./tinyio.ts";

type Coro<R = any> = tinyio.Coro<R>;

// Shared helpers
// --------------

function run<R>(coro: Coro<R>, options?: tinyio.RunOptions): R {
  return new tinyio.Loop().run(coro, options);
}

// Runs `fn`, which must throw, and returns what it threw.
function thrownBy(fn: () => unknown): any {
  try {
    fn();
  } catch (error) {
    return error;
  }
  assert.fail("expected an error to be thrown");
}

// Awaits `promise`, which must reject, and returns its reason.
async function rejectionOf(promise: Promise<unknown>): Promise<any> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected the promise to reject");
}

// `promise`, or a failure once `ms` have passed without it settling.
function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms: a hang`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

// toPromise, bounded: a regression that leaves the loop waiting forever
// fails the spec, rather than draining Node's event loop under the runner.
function toPromiseWithin<R>(coro: Coro<R>, options?: Parameters<typeof tinyio.toPromise>[1], ms = 5000): Promise<R> {
  return withDeadline(tinyio.toPromise(coro, options), ms);
}

function kindOf(error: unknown): string {
  if (error instanceof tinyio.CancelledError) return "CancelledError";
  if (error instanceof tinyio.TimeoutError) return "TimeoutError";
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

// Waits on an Event nobody sets, and logs how it was cancelled.
function* waitsForever(log: string[], name: string): Coro<void> {
  try {
    yield new tinyio.Event().wait();
    log.push(`${name} resumed`);
  } catch (error) {
    log.push(`${name} got ${kindOf(error)}`);
    throw error;
  } finally {
    log.push(`${name} finally`);
  }
}

// Waits for a coroutine with a plain `yield` and logs how that ended.
function* waitsOn<R>(log: string[], name: string, coro: Coro<R>): Coro<R> {
  try {
    const value: R = yield coro;
    log.push(`${name} resumed`);
    return value;
  } catch (error) {
    log.push(`${name} got ${kindOf(error)}`);
    throw error;
  } finally {
    log.push(`${name} finally`);
  }
}

function* failAfter(ms: number, error: unknown): Coro<never> {
  yield tinyio.sleep(ms);
  throw error;
}

// Polls a shared flag (set by a thread) until it is non-zero, so that a
// coroutine can fail only once the thread has really started its work.
function* untilFlag(flags: Int32Array, index: number): Coro<void> {
  const start = performance.now();
  while (Atomics.load(flags, index) === 0) {
    if (performance.now() - start > 5000) throw new Error("the thread never started");
    yield tinyio.sleep(5);
  }
}

function elapsedMs(fn: () => void): number {
  const start = performance.now();
  fn();
  return performance.now() - start;
}

// Thread functions. Each is self-contained: it travels as source text.

// Blocks its thread for `ms` without burning a core, then returns `value`.
function blockFor(ms: number, value?: unknown): unknown {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  return value ?? ms;
}

function explodeInThread(): never {
  const error = new Error("the thread went wrong");
  error.name = "ThreadTrouble";
  throw error;
}

const here = fileURLToPath(new URL(".", import.meta.url));
const tinyioPath = fileURLToPath(new URL("./tinyio.ts", import.meta.url));
const scratch = join(here, "node_modules", ".cache", "bridge-test");

// Runs `source` as a .mts file (an ES module wherever it lies, so top-level
// await works) in a child `node --import tsx`; `TINYIO` in it is replaced by
// the absolute path of tinyio.ts. Reports how and when it exited; a child
// still alive after 15 s is killed (and reported as such).
function runScript(source: string): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string; ms: number }> {
  mkdirSync(scratch, { recursive: true });
  const script = join(scratch, `script-${process.pid}-${Math.random().toString(36).slice(2)}.mts`);
  writeFileSync(script, source.replaceAll("TINYIO", tinyioPath));
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", script], { cwd: here });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(killer);
      rmSync(script, { force: true });
      resolve({ code, signal, stdout, stderr, ms: performance.now() - start });
    });
  });
}

// Threads (worker_threads)
// ------------------------

describe("Threads (worker_threads)", () => {
  it("runInThread runs fn(...args) on a worker thread and resumes with its result (structured clone both ways)", () => {
    function* main(): Coro<unknown> {
      return yield tinyio.runInThread(
        (n: number, data: { words: string[]; when: Date }) => {
          const { isMainThread } = require("node:worker_threads");
          return { isMainThread, sum: n + 1, words: data.words.map((w) => w.toUpperCase()), year: data.when.getUTCFullYear(), map: new Map([["k", 1]]) };
        },
        41,
        { words: ["a", "b"], when: new Date(Date.UTC(2020, 0, 1)) },
      );
    }
    assert.deepEqual(run(main()), { isMainThread: false, sum: 42, words: ["A", "B"], year: 2020, map: new Map([["k", 1]]) });
  });

  it("an error thrown in the thread is raised with its name, message and the thread's stack", () => {
    function* main(): Coro<unknown> {
      try {
        yield* tinyio.runInThread(explodeInThread);
      } catch (error) {
        return error;
      }
      return "no error";
    }
    const error = run(main());
    assert.ok(error instanceof Error, `expected an Error, got ${String(error)}`);
    assert.equal(error.name, "ThreadTrouble");
    assert.equal(error.message, "the thread went wrong");
    assert.match(String(error.stack), /explodeInThread/);
    assert.match(String(error.stack), /the thread went wrong/);
  });

  it("a thread's error under `yield` crashes the loop: run throws it, and the waiter gets a CancelledError", () => {
    const log: string[] = [];
    function* main(): Coro<void> {
      yield* waitsOn(log, "main", tinyio.runInThread(explodeInThread));
    }
    const error = thrownBy(() => run(main()));
    assert.equal(error.name, "ThreadTrouble");
    assert.equal(error.message, "the thread went wrong");
    assert.match(String(error.stack), /explodeInThread/);
    assert.deepEqual(log, ["main got CancelledError", "main finally"]);
  });

  it("a thread's error under `yield*` is thrown at that line and caught by try/catch", () => {
    const log: string[] = [];
    function* main(): Coro<string> {
      try {
        yield* tinyio.runInThread(explodeInThread);
        log.push("not reached");
      } catch (error) {
        log.push(`caught ${kindOf(error)}`);
      }
      return "went on";
    }
    assert.equal(run(main()), "went on");
    assert.deepEqual(log, ["caught ThreadTrouble: the thread went wrong"]);
  });

  it("an async fn is awaited in the thread", () => {
    function* main(): Coro<unknown> {
      return yield tinyio.runInThread(async (x: number) => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        const later = await Promise.resolve(x * 2);
        return `async ${later}`;
      }, 21);
    }
    assert.equal(run(main()), "async 42");
  });

  it("fn is called with `this` bound to a ThreadContext whose `signal` is an AbortSignal", () => {
    function* main(): Coro<unknown> {
      return yield tinyio.runInThread(function (this: tinyio.ThreadContext) {
        return [this.signal instanceof AbortSignal, this.signal.aborted, Object.keys(this).includes("signal")];
      });
    }
    assert.deepEqual(run(main()), [true, false, true]);
  });

  it("three ~300 ms blocking calls gathered together take about 300 ms, not 900", () => {
    // Warm up: the pool keeps idle workers, so this measures concurrency
    // rather than the start-up cost of workers.
    run((function* () { yield [1, 2, 3].map((i) => tinyio.runInThread(blockFor, 1, i)); })());
    function* main(): Coro<unknown> {
      return yield [tinyio.runInThread(blockFor, 300, "a"), tinyio.runInThread(blockFor, 300, "b"), tinyio.runInThread(blockFor, 300, "c")];
    }
    let out: unknown;
    const ms = elapsedMs(() => (out = run(main())));
    assert.deepEqual(out, ["a", "b", "c"]);
    assert.ok(ms >= 280, `took ${ms.toFixed(0)} ms: the calls cannot have blocked for 300 ms`);
    assert.ok(ms < 850, `took ${ms.toFixed(0)} ms: the gathered calls did not run concurrently`);
  });

  // These two run under toPromise, raced with a deadline, so that a
  // regression (a dead thread nobody hears of) fails the spec instead of
  // blocking this whole file in a synchronous run forever.
  it("a thread that calls process.exit(3) raises an error naming the exit code, not a hang", async () => {
    function* main(): Coro<unknown> {
      try {
        yield* tinyio.runInThread(() => {
          process.exit(3);
        });
      } catch (error) {
        return error;
      }
      return "no error";
    }
    const start = performance.now();
    const error = await toPromiseWithin(main());
    const ms = performance.now() - start;
    assert.ok(error instanceof Error, `expected an Error, got ${String(error)}`);
    assert.match(error.message, /\b3\b/);
    assert.match(error.message, /exit/i);
    assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
  });

  it("an uncaught error thrown in a setTimeout callback in the thread raises that error, not a hang", async () => {
    function* main(): Coro<unknown> {
      try {
        yield* tinyio.runInThread(
          () =>
            new Promise(() => {
              setTimeout(() => {
                throw new Error("late failure in a timer");
              }, 10);
            }),
        );
      } catch (error) {
        return error;
      }
      return "no error";
    }
    const start = performance.now();
    const error = await toPromiseWithin(main());
    const ms = performance.now() - start;
    assert.ok(error instanceof Error, `expected an Error, got ${String(error)}`);
    assert.match(error.message, /late failure in a timer/);
    assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
  });

  it("a fn that uses a variable it closes over gives a ReferenceError whose message says fn must be self-contained", () => {
    const secretNumber = 42;
    function* main(): Coro<unknown> {
      try {
        yield* tinyio.runInThread(() => secretNumber + 1);
      } catch (error) {
        return error;
      }
      return "no error";
    }
    const error = run(main());
    assert.ok(error instanceof Error, `expected an Error, got ${String(error)}`);
    assert.equal(error.name, "ReferenceError");
    assert.match(error.message, /secretNumber/);
    assert.match(error.message, /self-contained/);
  });

  it("an argument that cannot be cloned (a function, a symbol) gives an error at the yield saying it cannot be sent by structured clone", () => {
    const messages: string[] = [];
    function* main(): Coro<string> {
      for (const bad of [() => 1, Symbol("nope")]) {
        try {
          yield* tinyio.runInThread((x: unknown) => typeof x, bad);
          messages.push("no error");
        } catch (error) {
          messages.push(String((error as Error).message));
        }
      }
      // The pool is still usable afterwards.
      return yield tinyio.runInThread(() => "still works");
    }
    assert.equal(run(main()), "still works");
    assert.equal(messages.length, 2);
    for (const message of messages) assert.match(message, /structured clone|cannot be sent/i);
  });

  it("a native function (Math.sqrt) or a bound function gives a TypeError at the yield, not at the call", () => {
    const errors: unknown[] = [];
    const bound = function (x: number) {
      return x;
    }.bind(null);
    function* main(): Coro<void> {
      for (const fn of [Math.sqrt, bound]) {
        const coro = tinyio.runInThread(fn, 4); // creating the call does not throw
        try {
          yield* coro;
          errors.push("no error");
        } catch (error) {
          errors.push(error);
        }
      }
    }
    run(main());
    assert.equal(errors.length, 2);
    for (const error of errors) {
      assert.ok(error instanceof TypeError, `expected a TypeError, got ${String(error)}`);
      assert.match(error.message, /native|bound/);
    }
    // Under a plain `yield` it crashes the loop like any error.
    function* plain(): Coro<void> {
      yield tinyio.runInThread(Math.sqrt, 4);
    }
    assert.ok(thrownBy(() => run(plain())) instanceof TypeError);
  });

  it("cancelling an async thread call aborts this.signal, lets the thread clean up, and the waiter's CancelledError comes after", () => {
    // flags[0]: the thread started; [1]: its abort handler ran; [2]: its
    // finally ran (it settled rather than being terminated).
    const flags = new Int32Array(new SharedArrayBuffer(12));
    const log: string[] = [];
    const failure = new Error("a sibling failed");
    async function slowButPolite(this: tinyio.ThreadContext, shared: Int32Array): Promise<string> {
      try {
        await new Promise((_resolve, reject) => {
          this.signal.addEventListener("abort", () => {
            Atomics.store(shared, 1, 1);
            reject(this.signal.reason);
          });
          Atomics.store(shared, 0, 1);
        });
        return "finished";
      } finally {
        Atomics.store(shared, 2, 1);
      }
    }
    function* waiter(): Coro<void> {
      try {
        yield tinyio.runInThread(slowButPolite, flags);
        log.push("waiter resumed");
      } catch (error) {
        log.push(`waiter got ${kindOf(error)}; abort handler ran: ${Atomics.load(flags, 1) === 1}; thread settled: ${Atomics.load(flags, 2) === 1}`);
        throw error;
      } finally {
        log.push("waiter finally");
      }
    }
    function* failer(): Coro<never> {
      yield* untilFlag(flags, 0);
      yield tinyio.sleep(50);
      throw failure;
    }
    function* main(): Coro<void> {
      yield [waiter(), failer()];
    }
    const error = thrownBy(() => run(main()));
    assert.equal(error, failure);
    assert.equal(Atomics.load(flags, 1), 1, "the thread's abort handler did not run");
    assert.equal(Atomics.load(flags, 2), 1, "the thread's finally did not run: it was terminated rather than allowed to settle");
    assert.deepEqual(log, ["waiter got CancelledError; abort handler ran: true; thread settled: true", "waiter finally"]);
  });

  it("cancelling a synchronous infinite loop in a thread terminates its worker: run throws within the grace period, no hang", () => {
    const flags = new Int32Array(new SharedArrayBuffer(4));
    const log: string[] = [];
    const failure = new Error("stop spinning");
    function* main(): Coro<void> {
      const spin = tinyio.runInThread((shared: Int32Array) => {
        Atomics.store(shared, 0, 1);
        for (;;);
      }, flags);
      yield [waitsOn(log, "waiter", spin), (function* () {
        yield* untilFlag(flags, 0);
        yield tinyio.sleep(50);
        throw failure;
      })()];
    }
    let error: unknown;
    const ms = elapsedMs(() => (error = thrownBy(() => run(main()))));
    assert.equal(error, failure);
    assert.deepEqual(log, ["waiter got CancelledError", "waiter finally"]);
    assert.ok(ms < 3000, `took ${ms.toFixed(0)} ms`);
  });

  it("ThreadPool(2).map runs at most two at once and returns the results in order", () => {
    const pool = new tinyio.ThreadPool(2);
    function* main(): Coro<unknown> {
      return yield pool.map((x: number) => {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
        return x * 10;
      }, [0, 1, 2, 3, 4, 5]);
    }
    let out: unknown;
    const ms = elapsedMs(() => (out = run(main())));
    assert.deepEqual(out, [0, 10, 20, 30, 40, 50]);
    assert.ok(ms >= 550, `took ${ms.toFixed(0)} ms: more than two ran at once`);
    assert.ok(ms < 1500, `took ${ms.toFixed(0)} ms: fewer than two ran at once`);
  });

  it("ThreadPool(maxThreads) takes a positive integer, else RangeError", () => {
    for (const bad of [0, 1.5, -1, Number.NaN]) assert.throws(() => new tinyio.ThreadPool(bad), RangeError, `ThreadPool(${bad})`);
    assert.doesNotThrow(() => new tinyio.ThreadPool(1));
  });

  it("20 gathered runInThread calls share the default pool, at most min(32, availableParallelism() + 4) at once", () => {
    // shared[0]: calls running now; shared[1]: the most seen at once.
    const shared = new Int32Array(new SharedArrayBuffer(8));
    function square(counters: Int32Array, i: number): number {
      const now = Atomics.add(counters, 0, 1) + 1;
      for (let most = Atomics.load(counters, 1); now > most; most = Atomics.load(counters, 1)) {
        if (Atomics.compareExchange(counters, 1, most, now) === most) break;
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30);
      Atomics.sub(counters, 0, 1);
      return i * i;
    }
    function* main(): Coro<unknown> {
      return yield Array.from({ length: 20 }, (_, i) => tinyio.runInThread(square, shared, i));
    }
    assert.deepEqual(run(main()), Array.from({ length: 20 }, (_, i) => i * i));
    const bound = Math.min(32, availableParallelism() + 4);
    assert.ok(Atomics.load(shared, 1) <= bound, `${Atomics.load(shared, 1)} calls ran at once, more than ${bound}`);
    assert.ok(Atomics.load(shared, 1) >= 2, "the calls never ran concurrently");
    assert.equal(Atomics.load(shared, 0), 0);
  });

  it("a thread error caught with `yield*` leaves the loop running: later calls and other coroutines go on", () => {
    const log: string[] = [];
    function* sibling(): Coro<string> {
      for (let i = 0; i < 3; i++) {
        yield tinyio.sleep(10);
        log.push(`sibling ${i}`);
      }
      return "sibling done";
    }
    function* main(): Coro<unknown> {
      const other = sibling();
      yield new Set([other]);
      try {
        yield* tinyio.runInThread(explodeInThread);
      } catch (error) {
        log.push(`caught ${kindOf(error)}`);
      }
      const next = yield tinyio.runInThread((x: number) => x + 1, 1);
      return [next, yield other];
    }
    assert.deepEqual(run(main()), [2, "sibling done"]);
    assert.equal(log[0], "caught ThreadTrouble: the thread went wrong");
    assert.deepEqual(log.slice(1).sort(), ["sibling 0", "sibling 1", "sibling 2"]);
  });

  it("works under tsx: a fn declaring a named function, a named arrow and a class (keepNames' __name) runs in the thread", (t) => {
    function withNames(n: number): unknown[] {
      function double(x: number) {
        return 2 * x;
      }
      const inc = (x: number) => x + 1;
      class Box {
        value: number;
        constructor(value: number) {
          this.value = value;
        }
        get twice() {
          return double(this.value);
        }
      }
      return [double(n), inc(n), new Box(n).twice, double.name, inc.name, Box.name];
    }
    // (Under tsx the source holds `__name(...)` calls; say so in the report.)
    t.diagnostic(`source uses __name: ${String(withNames).includes("__name")}`);
    function* main(): Coro<unknown> {
      return yield tinyio.runInThread(withNames, 5);
    }
    assert.deepEqual(run(main()), [10, 6, 10, "double", "inc", "Box"]);
  });

  it("a script whose last line is loop.run(...) with threads exits at once on success", async () => {
    const { code, signal, stdout, stderr, ms } = await runScript(`
      import * as tinyio from "TINYIO";
      const pool = new tinyio.ThreadPool(2);
      function* main(): tinyio.Coro<string> {
        const [a, b, c] = yield [
          tinyio.runInThread((x: number) => x * 2, 21),
          pool.runInThread(async () => "pool"),
          tinyio.runInThread(() => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50); return "slept"; }),
        ];
        return [a, b, c].join(" ");
      }
      console.log(new tinyio.Loop().run(main()));
    `);
    assert.equal(signal, null, `killed after ${ms.toFixed(0)} ms: the script hung; stderr: ${stderr}`);
    assert.equal(code, 0, stderr);
    assert.equal(stdout.trim(), "42 pool slept");
    assert.ok(ms < 6000, `took ${ms.toFixed(0)} ms`);
  });

  it("a script whose last line is loop.run(...) exits at once when a coroutine throws while a thread spins in an infinite loop", async () => {
    const { code, signal, stdout, stderr, ms } = await runScript(`
      import * as tinyio from "TINYIO";
      const started = new Int32Array(new SharedArrayBuffer(4));
      function* spin(): tinyio.Coro<void> {
        yield tinyio.runInThread((flag: Int32Array) => { Atomics.store(flag, 0, 1); for (;;); }, started);
      }
      function* fail(): tinyio.Coro<void> {
        while (Atomics.load(started, 0) === 0) yield tinyio.sleep(5);
        yield tinyio.sleep(20);
        console.log("throwing");
        throw new Error("boom in the child");
      }
      new tinyio.Loop().run((function* () { yield [spin(), fail()]; })());
    `);
    assert.equal(signal, null, `killed after ${ms.toFixed(0)} ms: the script hung; stderr: ${stderr}`);
    assert.equal(stdout.trim(), "throwing");
    assert.equal(code, 1);
    assert.match(stderr, /boom in the child/);
    assert.ok(ms < 6000, `took ${ms.toFixed(0)} ms`);
  });
});

// Promises (Node's own event loop)
// --------------------------------

describe("Promises (Node's own event loop)", () => {
  it("toPromise resolves with the coroutine's result", async () => {
    function* main(): Coro<string> {
      yield tinyio.sleep(5);
      const [a, b] = yield [(function* () { yield; return "a"; })(), (function* () { yield tinyio.sleep(1); return "b"; })()];
      return a + b;
    }
    const promise = tinyio.toPromise(main());
    assert.ok(promise instanceof Promise);
    assert.equal(await withDeadline(promise, 5000), "ab");
  });

  it("toPromise rejects with the original error (same object)", async () => {
    const failure = new Error("failed under toPromise");
    const log: string[] = [];
    function* main(): Coro<void> {
      yield [waitsForever(log, "other"), failAfter(5, failure)];
    }
    const error = await rejectionOf(toPromiseWithin(main()));
    assert.equal(error, failure);
    assert.deepEqual(log, ["other got CancelledError", "other finally"]);
  });

  it("Node's timers keep firing while a tinyio loop spins through 200,000 bare yields under toPromise", async () => {
    let immediates = 0;
    let intervals = 0;
    let stop = false;
    const interval = setInterval(() => intervals++, 1);
    const tick = () => {
      immediates++;
      if (!stop) setImmediate(tick);
    };
    setImmediate(tick);
    function* spin(): Coro<number[]> {
      const before = [immediates, intervals];
      for (let i = 0; i < 200_000; i++) yield;
      return [immediates - before[0], intervals - before[1]];
    }
    try {
      const [duringImmediates, duringIntervals] = await toPromiseWithin(spin());
      assert.ok(duringImmediates + duringIntervals > 0, "Node's event loop never ran while the tinyio loop was busy");
      assert.ok(duringImmediates > 0, "no setImmediate callback ran while the tinyio loop was busy");
    } finally {
      stop = true;
      clearInterval(interval);
    }
  });

  it("an Event.set() from a Node setTimeout wakes a coroutine under toPromise", async () => {
    const ready = new tinyio.Event();
    const log: string[] = [];
    setTimeout(() => {
      log.push("timer sets");
      ready.set();
    }, 30);
    function* waiter(): Coro<string> {
      log.push("waiting");
      yield ready.wait();
      log.push("woken");
      return "woken";
    }
    const start = performance.now();
    assert.equal(await toPromiseWithin(waiter()), "woken");
    assert.deepEqual(log, ["waiting", "timer sets", "woken"]);
    assert.ok(performance.now() - start < 2000);
  });

  it("aborting the signal mid-run cancels every coroutine and rejects with the signal's reason, after their finally blocks ran", async () => {
    const controller = new AbortController();
    const reason = new Error("stop now");
    const log: string[] = [];
    function* sleeper(): Coro<void> {
      try {
        yield tinyio.sleep(10_000);
        log.push("sleeper resumed");
      } finally {
        log.push("sleeper finally");
      }
    }
    function* main(): Coro<void> {
      yield [sleeper(), waitsForever(log, "waiter")];
    }
    setTimeout(() => controller.abort(reason), 30);
    const start = performance.now();
    const error = await rejectionOf(toPromiseWithin(main(), { signal: controller.signal }));
    assert.equal(error, reason);
    assert.deepEqual([...log].sort(), ["sleeper finally", "waiter finally", "waiter got CancelledError"]);
    assert.ok(performance.now() - start < 5000, "the run waited for the sleep instead of being cancelled");
  });

  it("fromPromise waits for a promise, or for a function (signal) => promise, and resumes with its value", async () => {
    let given: unknown;
    function* main(): Coro<unknown> {
      const a = yield tinyio.fromPromise(Promise.resolve(42));
      const b = yield tinyio.fromPromise(new Promise((resolve) => setTimeout(() => resolve("later"), 10)));
      const c = yield tinyio.fromPromise((signal: AbortSignal) => {
        given = signal;
        return new Promise((resolve) => setTimeout(() => resolve(`aborted: ${signal.aborted}`), 10));
      });
      return [a, b, c];
    }
    assert.deepEqual(await toPromiseWithin(main()), [42, "later", "aborted: false"]);
    assert.ok(given instanceof AbortSignal);
  });

  it("a rejection is raised as the original error object: under `yield` it crashes the loop", async () => {
    const failure = new Error("rejected");
    const log: string[] = [];
    function* main(): Coro<void> {
      yield* waitsOn(log, "main", tinyio.fromPromise(new Promise((_, reject) => setTimeout(() => reject(failure), 5))));
    }
    const error = await rejectionOf(toPromiseWithin(main()));
    assert.equal(error, failure);
    assert.deepEqual(log, ["main got CancelledError", "main finally"]);
  });

  it("a rejection is raised as the original error object: under `yield*` try/catch catches it", async () => {
    const failure = new Error("rejected, caught");
    function* main(): Coro<unknown> {
      try {
        yield* tinyio.fromPromise(Promise.reject(failure));
      } catch (error) {
        return error;
      }
      return "no error";
    }
    assert.equal(await toPromiseWithin(main()), failure);
  });

  it("the function form's signal aborts when the waiting coroutine is cancelled", async () => {
    const failure = new Error("sibling failed");
    const log: string[] = [];
    let given: AbortSignal | undefined;
    function* waiter(): Coro<void> {
      try {
        yield tinyio.fromPromise(
          (signal: AbortSignal) =>
            new Promise((_resolve, reject) => {
              given = signal;
              signal.addEventListener("abort", () => {
                log.push("signal aborted");
                reject(signal.reason);
              });
            }),
        );
      } finally {
        log.push("waiter finally");
      }
    }
    function* main(): Coro<void> {
      yield [waiter(), failAfter(20, failure)];
    }
    const error = await rejectionOf(toPromiseWithin(main()));
    assert.equal(error, failure);
    assert.ok(given instanceof AbortSignal);
    assert.equal(given.aborted, true);
    assert.deepEqual([...log].sort(), ["signal aborted", "waiter finally"]);
  });

  it("fromPromise under the synchronous run throws an error pointing to toPromise (and to async functions in runInThread)", () => {
    function* main(): Coro<unknown> {
      try {
        yield* tinyio.fromPromise(Promise.resolve(1));
      } catch (error) {
        return error;
      }
      return "no error";
    }
    const error = run(main());
    assert.ok(error instanceof Error, `expected an Error, got ${String(error)}`);
    assert.match(error.message, /toPromise/);
    assert.match(error.message, /runInThread/);
    // Under a plain `yield`, it crashes the synchronous run.
    function* plain(): Coro<void> {
      yield tinyio.fromPromise(() => Promise.resolve(1));
    }
    assert.match(thrownBy(() => run(plain())).message, /toPromise/);
  });

  it("yielding a raw Promise under toPromise gives a TypeError pointing to fromPromise", async () => {
    function* main(): Coro<unknown> {
      try {
        yield Promise.resolve(1) as unknown as tinyio.Yieldable;
      } catch (error) {
        return error;
      }
      return "no error";
    }
    const error = await toPromiseWithin(main());
    assert.ok(error instanceof TypeError, `expected a TypeError, got ${String(error)}`);
    assert.match(error.message, /fromPromise/);
  });

  it("the process stays alive while a toPromise'd loop waits on a tinyio sleep, and exits when it is done", async () => {
    const { code, signal, stdout, stderr, ms } = await runScript(`
      import * as tinyio from "TINYIO";
      const start = performance.now();
      function* main(): tinyio.Coro<string> {
        yield tinyio.sleep(300);
        return "slept";
      }
      const out = await tinyio.toPromise(main());
      console.log(out, Math.round(performance.now() - start));
    `);
    assert.equal(signal, null, `killed after ${ms.toFixed(0)} ms: the script hung; stderr: ${stderr}`);
    assert.equal(code, 0, `exit code ${code} (13 means the process exited during the sleep); stderr: ${stderr}`);
    const [word, elapsed] = stdout.trim().split(" ");
    assert.equal(word, "slept");
    assert.ok(Number(elapsed) >= 280, `slept only ${elapsed} ms`);
    assert.ok(ms < 6000, `took ${ms.toFixed(0)} ms`);
  });

  it("threads work under toPromise, and Node's timers run while the loop waits for them", async () => {
    let ticks = 0;
    const interval = setInterval(() => ticks++, 5);
    function* main(): Coro<unknown> {
      const before = ticks;
      const value = yield tinyio.runInThread((ms: number) => {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
        return "from the thread";
      }, 100);
      return [value, ticks - before];
    }
    try {
      const [value, during] = (await toPromiseWithin(main())) as [string, number];
      assert.equal(value, "from the thread");
      assert.ok(during > 0, "no Node timer fired while the loop waited for the thread");
    } finally {
      clearInterval(interval);
    }
  });
});

// Isolation
// ---------

describe("Isolation", () => {
  it("isolate returns [value, true] when the coroutine succeeds", () => {
    function* work(): Coro<string> {
      const [a, b] = yield [(function* () { yield tinyio.sleep(5); return "a"; })(), (function* () { yield; return "b"; })()];
      return a + b;
    }
    function* main(): Coro<unknown> {
      return yield tinyio.isolate(work());
    }
    assert.deepEqual(run(main()), ["ab", true]);
  });

  it("isolate returns [error, false] on failure, cancelling only the nested loop's coroutines", () => {
    const failure = new Error("inner failure");
    const log: string[] = [];
    function* innerMain(): Coro<never> {
      yield new Set([waitsForever(log, "inner sibling")]);
      yield tinyio.sleep(20);
      throw failure;
    }
    function* outerSibling(): Coro<string> {
      yield tinyio.sleep(80);
      log.push("outer sibling done");
      return "outer sibling";
    }
    function* main(): Coro<unknown> {
      return yield [tinyio.isolate(innerMain()), outerSibling()];
    }
    const [isolated, sibling] = run(main()) as [[unknown, boolean], string];
    assert.equal(isolated[0], failure);
    assert.equal(isolated[1], false);
    assert.equal(sibling, "outer sibling");
    assert.deepEqual(log, ["inner sibling got CancelledError", "inner sibling finally", "outer sibling done"]);
  });

  it("the outer loop keeps running while the isolated coroutine sleeps", () => {
    const log: string[] = [];
    function* isolated(): Coro<string> {
      log.push("isolated starts");
      yield tinyio.sleep(100);
      log.push("isolated ends");
      return "isolated";
    }
    function* ticker(): Coro<void> {
      for (let i = 0; i < 3; i++) {
        yield tinyio.sleep(10);
        log.push(`tick ${i}`);
      }
    }
    function* main(): Coro<unknown> {
      return yield [tinyio.isolate(isolated()), ticker()];
    }
    assert.deepEqual(run(main()), [["isolated", true], undefined]);
    assert.deepEqual(log, ["isolated starts", "tick 0", "tick 1", "tick 2", "isolated ends"]);
  });

  it("isolate nests: an isolate inside an isolate contains its own failure", () => {
    const failure = new Error("deepest failure");
    const log: string[] = [];
    function* deepest(): Coro<never> {
      yield tinyio.sleep(5);
      throw failure;
    }
    function* middle(): Coro<unknown> {
      const inner = yield tinyio.isolate(deepest());
      log.push("middle goes on");
      const ok = yield tinyio.isolate((function* () { yield tinyio.sleep(5); return "deep ok"; })());
      return ["middle", inner, ok];
    }
    function* main(): Coro<unknown> {
      return yield tinyio.isolate(middle());
    }
    const [value, ok] = run(main()) as [unknown[], boolean];
    assert.equal(ok, true);
    assert.equal(value[0], "middle");
    assert.deepEqual(value[1], [failure, false]);
    assert.equal((value[1] as unknown[])[0], failure);
    assert.deepEqual(value[2], ["deep ok", true]);
    assert.deepEqual(log, ["middle goes on"]);
  });

  it("a CancelledError from the outer loop is not caught: the nested loop is cancelled and run throws the outer error", () => {
    const failure = new Error("outer failure");
    const log: string[] = [];
    function* innerWork(): Coro<void> {
      try {
        yield tinyio.sleep(10_000);
        log.push("inner resumed");
      } catch (error) {
        log.push(`inner got ${kindOf(error)}`);
        throw error;
      } finally {
        log.push("inner finally");
      }
    }
    function* main(): Coro<void> {
      yield new Set([failAfter(20, failure)]);
      try {
        // (`yield*`, so that what isolate itself returns or raises is seen here.)
        const result = yield* tinyio.isolate(innerWork());
        log.push(`isolate returned ${kindOf(result[0])}`);
      } catch (error) {
        log.push(`isolate raised ${kindOf(error)}`);
        throw error;
      }
    }
    let error: unknown;
    const ms = elapsedMs(() => (error = thrownBy(() => run(main()))));
    assert.equal(error, failure);
    assert.deepEqual(log, ["inner got CancelledError", "inner finally", "isolate raised CancelledError"]);
    assert.ok(ms < 5000, "the run waited for the inner sleep instead of cancelling it");
  });

  it("copy hands a coroutine scheduled on the outer loop into an isolate: same result, run once", () => {
    let runs = 0;
    function* shared(): Coro<number> {
      runs++;
      yield tinyio.sleep(10);
      return 7;
    }
    function* main(): Coro<unknown> {
      const original = shared();
      const copied: Coro<number> = yield tinyio.copy(original);
      assert.notEqual(copied, original);
      function* inner(): Coro<number> {
        return (yield copied) * 6;
      }
      const isolated = yield tinyio.isolate(inner());
      const direct = yield original; // the outer loop has its result
      return [isolated, direct];
    }
    assert.deepEqual(run(main()), [[42, true], 7]);
    assert.equal(runs, 1);
  });

  it("copy of a coroutine that already finished on the outer loop gives its result inside an isolate, without running it again", () => {
    let runs = 0;
    function* shared(): Coro<string> {
      runs++;
      yield;
      return "once";
    }
    function* main(): Coro<unknown> {
      const original = shared();
      const first = yield original;
      const copied: Coro<string> = yield tinyio.copy(original);
      const isolated = yield tinyio.isolate((function* () { return `${yield copied} inside`; })());
      return [first, isolated];
    }
    assert.deepEqual(run(main()), ["once", ["once inside", true]]);
    assert.equal(runs, 1);
  });
});
