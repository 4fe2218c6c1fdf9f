// 08: threads. `runInThread(fn, ...args)` runs a blocking function on a worker
// thread. `fn` travels as source text, so it must be self-contained: it may use
// its arguments and globals, not variables from the code around it.
import * as tinyio from "../tinyio.ts";

function blockFor(ms: number, x: number): number {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms); // sleeps the thread
  return x + 1;
}

function spinFor(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end); // busy: only stopping the worker can end this early
}

function failInThread(): never {
  throw new RangeError("raised in the thread");
}

function* main(): tinyio.Coro<void> {
  const start = performance.now();
  const out = yield [1, 2, 3].map((x) => tinyio.runInThread(blockFor, 300, x));
  const fast = performance.now() - start < 900; // one after another: 900 ms or more
  console.log(out, fast ? "side by side" : "one after another");
  try {
    yield* tinyio.runInThread(failInThread); // `yield*`: its error is thrown here
  } catch (e) {
    console.log(`caught ${(e as Error).name}: ${(e as Error).message}`);
  }
}

function* blowUpSoon(): tinyio.Coro<void> {
  yield tinyio.sleep(200);
  throw new Error("boom");
}

new tinyio.Loop().run(main());
const start = performance.now();
try { // cancellation reaches threads: the 60-second call is stopped
  new tinyio.Loop().run(tinyio.all([tinyio.runInThread(spinFor, 60_000), blowUpSoon()]));
} catch (e) {
  console.log(`run threw ${(e as Error).message}, thread stopped: ${performance.now() - start < 10_000}`);
}

// Prints:
//   [ 2, 3, 4 ] side by side
//   caught RangeError: raised in the thread
//   run threw boom, thread stopped: true
