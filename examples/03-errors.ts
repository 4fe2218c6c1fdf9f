// 03: one error cancels everything. When a coroutine throws, every other
// coroutine gets a CancelledError thrown in where it waits, so its `finally`
// blocks run; then `run` throws the original error.
import * as tinyio from "../tinyio.ts";

const cleanedUp: string[] = [];

function* worker(name: string): tinyio.Coro<void> {
  try {
    yield tinyio.sleep(10_000);
    console.log("never printed");
  } finally {
    cleanedUp.push(name); // runs on cancellation too
  }
}

function* blowUp(): tinyio.Coro<void> {
  yield tinyio.sleep(100);
  throw new Error("boom");
}

function* main(): tinyio.Coro<void> {
  try {
    yield [worker("a"), worker("b"), blowUp()];
  } catch (e) {
    // A waiter never sees the error itself, only its own cancellation.
    console.log(`main got ${(e as Error).name}`);
    throw e;
  }
}

try {
  new tinyio.Loop().run(main());
} catch (e) {
  console.log(`run threw: ${(e as Error).message}`);
}
console.log(`cleaned up: ${cleanedUp.sort().join(", ")}`);

// Prints:
//   main got CancelledError
//   run threw: boom
//   cleaned up: a, b
