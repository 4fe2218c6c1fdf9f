// 01: hello, loop. A coroutine is a generator function; it `yield`s what it
// waits for. Yielding an array of coroutines waits for all of them at once
// (a "gather"), so the two one-second sleeps below overlap.
//
// Run it: npx tsx examples/01-hello.ts (or: npm start)
import * as tinyio from "../tinyio.ts";

function* slowAddOne(x: number): tinyio.Coro<number> {
  yield tinyio.sleep(1000); // milliseconds, like setTimeout
  return x + 1;
}

function* foo(): tinyio.Coro<number[]> {
  const [four, five] = yield [slowAddOne(3), slowAddOne(4)];
  return [four, five];
}

const start = performance.now();
const out = new tinyio.Loop().run(foo()); // blocks until foo() is done
const seconds = (performance.now() - start) / 1000;

console.log(out);
console.log(seconds < 1.9 ? "in about one second, not two" : `too slow: ${seconds} s`);

// Prints:
//   [ 4, 5 ]
//   in about one second, not two
