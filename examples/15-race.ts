// 15: a race. The first of several coroutines to finish wins, and the
// others are stopped. Built from the two previous examples: the entrants
// run in an isolate (a cancel scope), `asCompleted` tells us who finished
// first, and then we stop the scope from inside by throwing a marker error:
// its nested loop cancels every entrant still running (their `finally`
// blocks run), and `isolate` hands us the marker. Any other error means an
// entrant failed before anyone won (or failed to clean up): we raise it.
import assert from "node:assert/strict";
import * as tinyio from "../tinyio.ts";

function* race<T>(entrants: tinyio.Coro<T>[]): tinyio.Coro<T> {
  let winner!: T;
  const won = new Error("a race was won"); // not a failure: how the scope ends
  function* scope(): tinyio.Coro<never> {
    const [first] = yield tinyio.asCompleted(entrants);
    winner = yield first;
    throw won; // cancels the others
  }
  const [error] = yield* tinyio.isolate(scope());
  if (error !== won) throw error;
  return winner;
}

const log: string[] = [];

function* mirror(name: string, ms: number, fails = false): tinyio.Coro<string> {
  try {
    yield tinyio.sleep(ms);
    if (fails) throw new Error(`${name} is down`);
    return name;
  } finally {
    log.push(`${name}: finally`);
  }
}

function* main(): tinyio.Coro<void> {
  const start = performance.now();
  const fastest = yield* race([mirror("eu", 300), mirror("us", 100), mirror("asia", 200)]);
  console.log(`winner: ${fastest}, after ${performance.now() - start < 250 ? "about 100" : "over 250"} ms`);
  console.log(log.sort().splice(0).join(", "));

  try {
    yield* race([mirror("eu", 300), mirror("broken", 10, true)]);
  } catch (error) {
    console.log(`no winner: ${(error as Error).message}`);
  }
  console.log(log.sort().splice(0).join(", "));

  // A race is a coroutine like any other: a timeout stops it, entrants and all.
  const [, onTime] = yield tinyio.timeout(race([mirror("eu", 300), mirror("us", 300)]), 50);
  console.log(`within 50 ms? ${onTime}; ${log.sort().splice(0).join(", ")}`);
}

const start = performance.now();
new tinyio.Loop().run(main());
assert.ok(performance.now() - start < 900, "a loser was not stopped: run waited for it");

// Prints:
//   winner: us, after about 100 ms
//   asia: finally, eu: finally, us: finally
//   no winner: broken is down
//   broken: finally, eu: finally
//   within 50 ms? false; eu: finally, us: finally
