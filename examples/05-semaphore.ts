// 05: at most N at once. A Semaphore hands out a limited number of permits;
// `using` gives the permit back at the end of the block, however the block
// ends (return, error or cancellation). Waiters are served first come, first
// served.
import * as tinyio from "../tinyio.ts";

const permits = new tinyio.Semaphore(2);
let running = 0;
let most = 0;

function* job(i: number): tinyio.Coro<number> {
  using _ = yield permits.acquire();
  running++;
  most = Math.max(most, running);
  console.log(`job ${i} starts`);
  yield tinyio.sleep(50);
  running--;
  return i * i;
}

function* main(): tinyio.Coro<number[]> {
  return yield [0, 1, 2, 3, 4].map(job);
}

console.log(new tinyio.Loop().run(main()));
console.log(`at most ${most} jobs ran at once`);

// Prints:
//   job 0 starts
//   job 1 starts
//   job 2 starts
//   job 3 starts
//   job 4 starts
//   [ 0, 1, 4, 9, 16 ]
//   at most 2 jobs ran at once
