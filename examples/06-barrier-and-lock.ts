// 06: Barrier and Lock. A Barrier holds coroutines back until all parties
// have arrived, and tells each its arrival index. A Lock is a Semaphore(1):
// it keeps a read-yield-write sequence from interleaving with another.
import * as tinyio from "../tinyio.ts";

const barrier = new tinyio.Barrier(3);

function* runner(ms: number): tinyio.Coro<number> {
  yield tinyio.sleep(ms);
  return yield barrier.wait(); // resumes once all three have arrived
}

let counter = 0;

function* unsafeIncrement(): tinyio.Coro<void> {
  const seen = counter;
  yield; // let the others run in between the read and the write
  counter = seen + 1;
}

function* safeIncrement(lock: tinyio.Lock): tinyio.Coro<void> {
  using _ = yield lock.acquire();
  yield* unsafeIncrement(); // inline: the same steps, now under the lock
}

function* main(): tinyio.Coro<void> {
  const [a, b, c] = yield [runner(30), runner(10), runner(20)];
  console.log(`arrival indices: a=${a}, b=${b}, c=${c}`);

  yield Array.from({ length: 10 }, unsafeIncrement);
  console.log(`ten increments without a lock: ${counter}`);
  counter = 0;
  const lock = new tinyio.Lock();
  yield Array.from({ length: 10 }, () => safeIncrement(lock));
  console.log(`ten increments with a lock: ${counter}`);
}

new tinyio.Loop().run(main());

// Prints:
//   arrival indices: a=2, b=0, c=1
//   ten increments without a lock: 1
//   ten increments with a lock: 10
