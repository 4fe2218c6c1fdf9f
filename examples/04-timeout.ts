// 04: timeouts. `timeout(coro, ms)` gives `[value, true]` if coro finishes in
// time; otherwise coro gets a TimeoutError thrown in where it waits (so its
// `finally` runs), and we get `[undefined, false]`. The loop carries on.
import * as tinyio from "../tinyio.ts";

function* download(name: string, ms: number): tinyio.Coro<string> {
  try {
    yield tinyio.sleep(ms);
    return `${name} done`;
  } catch (e) {
    if (e instanceof tinyio.TimeoutError) console.log(`${name}: timed out`);
    throw e;
  } finally {
    console.log(`${name}: closing`);
  }
}

function* main(): tinyio.Coro<void> {
  const [value, ok] = yield tinyio.timeout(download("small", 50), 1000);
  console.log(value, ok);

  const [late, inTime] = yield tinyio.timeout(download("huge", 60_000), 100);
  console.log(late, inTime);

  // Event.wait takes a timeout too: here nothing sets the event.
  const never = new tinyio.Event();
  yield never.wait(50);
  console.log(`after the wait, isSet() is ${never.isSet()}`);
}

new tinyio.Loop().run(main());

// Prints:
//   small: closing
//   small done true
//   huge: timed out
//   huge: closing
//   undefined false
//   after the wait, isSet() is false
