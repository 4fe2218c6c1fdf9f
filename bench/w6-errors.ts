// W6 error fan-out: N coroutines (10,000) sleep a long time (60 s) inside
// try/finally; one more sleeps 10 ms and throws. We measure the time from
// the throw until the error comes out at the top (out of `run`, or the
// awaited promise), and count the `finally` blocks that ran by then. The run
// fails unless the error that came out is the one thrown and all N finally
// blocks ran (and no sleeper finished its sleep).
//
//   tinyio    gather `[...sleepers, thrower]`; the loop cancels the sleepers
//             (CancelledError at their yield) and `run` throws
//   native    `Promise.all`; on its rejection, `abort()` one AbortController
//             whose signal every `setTimeout` (timers/promises) got, then
//             `Promise.allSettled` so that every finally has run, then rethrow
//   effection `all([...])`; a failing child halts its siblings (their
//             finally blocks run) and `run(...)` rejects
//   co        as native (co has no cancellation of its own): the sleepers
//             yield abortable `setTimeout` promises

import * as tinyio from "../tinyio.ts";
import { all, run, sleep, type Operation } from "effection";
import co from "co";
import { setTimeout as delay } from "node:timers/promises";
import { setMaxListeners } from "node:events";
import { check, intFlag, main, now, type Metrics } from "./common.ts";

const LONG_MS = 60_000;
const THROW_AFTER_MS = 10;

// Shared by every contender: the finally counter, the wake-up counter, and
// the moment of the throw.
let finallies = 0;
let overslept = 0;
let thrownAt = 0;
class Boom extends Error {}
function boom(): Boom {
  thrownAt = now();
  return new Boom("boom");
}

function tinyioFanOut(n: number): void {
  function* sleeper(): tinyio.Coro<void> {
    try {
      yield tinyio.sleep(LONG_MS);
      overslept++;
    } finally {
      finallies++;
    }
  }
  function* thrower(): tinyio.Coro<void> {
    yield tinyio.sleep(THROW_AFTER_MS);
    throw boom();
  }
  new tinyio.Loop().run((function* () {
    yield [...Array.from({ length: n }, sleeper), thrower()];
  })());
}

// native and co: one AbortController cancels every sleep.
async function abortAll(promises: Promise<unknown>[], controller: AbortController): Promise<void> {
  try {
    await Promise.all(promises);
  } catch (error) {
    controller.abort();
    await Promise.allSettled(promises); // every finally has run
    throw error;
  }
}

async function nativeFanOut(n: number): Promise<void> {
  const controller = new AbortController();
  const { signal } = controller;
  setMaxListeners(n + 1, signal); // (one abort listener per sleep is intended)
  async function sleeper(): Promise<void> {
    try {
      await delay(LONG_MS, undefined, { signal });
      overslept++;
    } finally {
      finallies++;
    }
  }
  async function thrower(): Promise<void> {
    await delay(THROW_AFTER_MS);
    throw boom();
  }
  await abortAll([...Array.from({ length: n }, sleeper), thrower()], controller);
}

async function effectionFanOut(n: number): Promise<void> {
  function* sleeper(): Operation<void> {
    try {
      yield* sleep(LONG_MS);
      overslept++;
    } finally {
      finallies++;
    }
  }
  function* thrower(): Operation<void> {
    yield* sleep(THROW_AFTER_MS);
    throw boom();
  }
  await run(() => all([...Array.from({ length: n }, sleeper), thrower()]));
}

async function coFanOut(n: number): Promise<void> {
  const controller = new AbortController();
  const { signal } = controller;
  setMaxListeners(n + 1, signal); // (one abort listener per sleep is intended)
  function* sleeper(): Generator<unknown, void, unknown> {
    try {
      yield delay(LONG_MS, undefined, { signal });
      overslept++;
    } finally {
      finallies++;
    }
  }
  function* thrower(): Generator<unknown, void, unknown> {
    yield delay(THROW_AFTER_MS);
    throw boom();
  }
  await abortAll([...Array.from({ length: n }, () => co(sleeper)), co(thrower)], controller);
}

function measure(body: (n: number) => void | Promise<void>) {
  return async (f: Record<string, string>): Promise<Metrics> => {
    const n = intFlag(f, "n", 10_000);
    let caught: unknown;
    try {
      await body(n);
    } catch (error) {
      caught = error;
    }
    const raisedMs = now() - thrownAt;
    const ranFinally = finallies; // counted when the error came out
    check(caught instanceof Boom, `expected the thrown Boom out of the run, got ${String(caught)}`);
    check(ranFinally === n, `${ranFinally} of ${n} finally blocks had run when the error came out`);
    check(overslept === 0, `${overslept} sleepers finished their ${LONG_MS} ms sleep`);
    return { throwToRaiseMs: raisedMs, finallyRan: ranFinally };
  };
}

await main({
  tinyio: measure(tinyioFanOut),
  native: measure(nativeFanOut),
  effection: measure(effectionFanOut),
  co: measure(coFanOut),
});
