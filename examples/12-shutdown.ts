// 12: graceful shutdown on Ctrl-C. A signal handler is a callback of Node's
// own event loop, so it can only run while that loop turns: under
// `toPromise`, not under the synchronous `run` (which blocks the thread;
// there Ctrl-C kills the process on the spot, and no `finally` runs). So we
// run under `toPromise`, and let SIGINT or SIGTERM abort its signal: every
// coroutine is cancelled (its `finally` runs), the thread call is stopped,
// and we exit with 128 + the signal's number (130 for SIGINT, 143 for
// SIGTERM), as a program killed by it would. A second Ctrl-C while we shut
// down kills the process at once, as usual: our listener was `once`.
//
// Left alone, the work takes half a second. To try Ctrl-C, give it longer:
// `npx tsx examples/12-shutdown.ts 10000`, and press Ctrl-C once the thread
// says it is running.
import { constants } from "node:os";
import * as tinyio from "../tinyio.ts";

const ms = Number(process.argv[2] ?? 500);

function* download(name: string): tinyio.Coro<string> {
  try {
    yield tinyio.sleep(ms);
    return `${name} downloaded`;
  } finally {
    console.log(`${name}: finally`); // runs whether it finished or was cancelled
  }
}

// An async function in a thread, which honours its signal the usual Node
// way: an aborted `timers/promises` sleep rejects with an AbortError.
async function crunch(this: tinyio.ThreadContext, ms: number): Promise<string> {
  const { setTimeout } = await import("node:timers/promises");
  try {
    console.log("thread: running"); // (printed from the thread itself)
    await setTimeout(ms, undefined, { signal: this.signal });
    return "crunched";
  } catch (error) {
    console.log("thread: stopped");
    throw error;
  }
}

function* crunchInThread(): tinyio.Coro<string> {
  try {
    return yield* tinyio.runInThread(crunch, ms);
  } finally {
    console.log("thread call: finally"); // only once the thread has stopped
  }
}

function* main(): tinyio.Coro<string[]> {
  return yield [download("a"), download("b"), crunchInThread()];
}

// The recipe: a signal aborts the run; the exit code says which one.
const controller = new AbortController();
let received: NodeJS.Signals | undefined;
const stop = (signal: NodeJS.Signals) => {
  received = signal;
  controller.abort(new Error(`stopped by ${signal}`));
};
process.once("SIGINT", stop).once("SIGTERM", stop);
try {
  const results = await tinyio.toPromise(main(), { signal: controller.signal });
  console.log(results.join(", "));
} catch (error) {
  if (error !== controller.signal.reason) throw error; // a real failure
  console.log(`stopped by ${received}`);
  process.exitCode = 128 + constants.signals[received!];
} finally {
  process.off("SIGINT", stop).off("SIGTERM", stop);
}

// Prints:
//   thread: running
//   a: finally
//   b: finally
//   thread call: finally
//   a downloaded, b downloaded, crunched
