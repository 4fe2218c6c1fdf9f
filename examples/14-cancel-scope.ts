// 14: `isolate` as a cancel scope. `timeout(work(), ms)` interrupts `work`
// alone: the coroutines it waits on with `yield`, and those it started in
// the background, are separate coroutines, and run on (a coroutine may have
// other waiters). `timeout(isolate(work()), ms)` stops the whole subtree:
// everything `work` yields runs on the isolate's nested loop, and a timeout
// of the isolate cancels that loop, so every coroutine in it gets a
// CancelledError (its `finally` runs) before the timeout gives
// `[undefined, false]`.
import assert from "node:assert/strict";
import * as tinyio from "../tinyio.ts";

const stopped: string[] = [];
const finished: string[] = [];

function* child(name: string, ms: number): tinyio.Coro<void> {
  try {
    yield tinyio.sleep(ms);
    finished.push(name);
  } catch (error) {
    stopped.push(`${name} (${(error as Error).name})`);
    throw error;
  }
}

// A subtree: a background job, and two children it waits for.
function* work(tag: string): tinyio.Coro<void> {
  yield new Set([child(`${tag}/background`, 300)]);
  try {
    yield [child(`${tag}/child-1`, 200), child(`${tag}/child-2`, 250)];
  } catch (error) {
    stopped.push(`${tag} (${(error as Error).name})`);
    throw error;
  }
}

function* main(): tinyio.Coro<void> {
  const [, onTime] = yield tinyio.timeout(work("alone"), 50);
  console.log("timeout(work(), 50): on time?", onTime);
  console.log("  stopped:", stopped.splice(0).join(", "));

  const [, scopeOnTime] = yield tinyio.timeout(tinyio.isolate(work("scope")), 50);
  console.log("timeout(isolate(work()), 50): on time?", scopeOnTime);
  console.log("  stopped:", stopped.sort().splice(0).join(", "));
}

new tinyio.Loop().run(main()); // waits for the children that ran on
console.log("ran on to the end:", finished.join(", "));
assert.deepEqual(finished, ["alone/child-1", "alone/child-2", "alone/background"]);

// Prints:
//   timeout(work(), 50): on time? false
//     stopped: alone (TimeoutError)
//   timeout(isolate(work()), 50): on time? false
//     stopped: scope (CancelledError), scope/background (CancelledError), scope/child-1 (CancelledError), scope/child-2 (CancelledError)
//   ran on to the end: alone/child-1, alone/child-2, alone/background
