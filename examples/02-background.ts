// 02: background work and events. Yielding a Set starts coroutines without
// waiting for them; an Event lets one coroutine wake others. `run` still
// waits for background coroutines before it returns.
import * as tinyio from "../tinyio.ts";

function* producer(ready: tinyio.Event): tinyio.Coro<void> {
  yield tinyio.sleep(100);
  console.log("producer: setting the event");
  ready.set();
}

function* consumer(name: string, ready: tinyio.Event): tinyio.Coro<string> {
  console.log(`${name}: waiting`);
  yield ready.wait();
  return `${name} woke up`;
}

function* main(): tinyio.Coro<void> {
  const ready = new tinyio.Event();
  yield new Set([producer(ready)]); // resumes at once; producer runs on its own
  console.log(`main: producer started, isSet() is ${ready.isSet()}`);
  const woken = yield [consumer("a", ready), consumer("b", ready)];
  console.log(`main: ${woken.join(", ")}; isSet() is ${ready.isSet()}`);
  yield new Set([tinyio.sleep(200)]); // main returns before this finishes...
}

new tinyio.Loop().run(main());
console.log("run returned"); // ...but run waits for it

// Prints:
//   main: producer started, isSet() is false
//   a: waiting
//   b: waiting
//   producer: setting the event
//   main: a woke up, b woke up; isSet() is true
//   run returned
