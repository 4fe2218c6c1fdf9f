// 13: stopping background work with a stop Event. A coroutine started with
// `yield new Set([...])` runs until it returns, and `run` waits for it: a
// heartbeat written as `for (;;) { beat(); yield tinyio.sleep(1000); }`
// never lets `run` return. (asyncio cancels leftover tasks when
// `asyncio.run` ends; tinyio, like the Python original, does not.) So we
// tell it to stop. `stop.wait(ms)` is an interruptible sleep: it ends when
// `ms` have passed or as soon as `stop` is set, whichever is first.
import assert from "node:assert/strict";
import * as tinyio from "../tinyio.ts";

function* heartbeat(stop: tinyio.Event, everyMs: number): tinyio.Coro<number> {
  let beats = 0;
  while (!stop.isSet()) {
    beats++; // (send a keep-alive here)
    yield stop.wait(everyMs); // sleeps, unless told to stop
  }
  console.log(`heartbeat: stopped after ${beats} beat(s)`);
  return beats;
}

function* request(n: number): tinyio.Coro<void> {
  yield tinyio.sleep(100);
  console.log(`request ${n}: done`);
}

function* main(): tinyio.Coro<void> {
  const stop = new tinyio.Event();
  const beating = heartbeat(stop, 1000); // a beat a second
  yield new Set([beating]);
  try {
    for (const n of [1, 2, 3]) yield request(n); // 300 ms of work
  } finally {
    stop.set(); // however the work ended
  }
  const [beats] = yield* tinyio.all([beating]); // wait for it to stop (typed)
  assert.equal(beats, 1);
}

const start = performance.now();
new tinyio.Loop().run(main());
const ms = performance.now() - start;
assert.ok(ms < 900, `took ${ms.toFixed(0)} ms: the heartbeat slept on`); // not the 1,000 ms of a beat
console.log("run returned, without waiting for the next beat");

// Prints:
//   request 1: done
//   request 2: done
//   request 3: done
//   heartbeat: stopped after 1 beat(s)
//   run returned, without waiting for the next beat
