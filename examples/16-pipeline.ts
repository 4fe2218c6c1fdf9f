// 16: a pipeline with backpressure. A producer reads lines faster than the
// workers can handle them; a Queue of 2 between them makes the producer wait
// whenever the workers fall behind, so no more than 2 lines ever pile up.
// Three workers take lines as they come (one line wakes one worker), and put
// their results on a second queue, which a collector drains. Closing a queue
// tells its getters "no more": `get()` then gives `[undefined, false]`.
import * as tinyio from "../tinyio.ts";

const lines = new tinyio.Queue<string>(2);
const results = new tinyio.Queue<string>();
let mostWaiting = 0;

function* producer(): tinyio.Coro<void> {
  for (const line of ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]) {
    yield lines.put(line); // waits while 2 lines are waiting already
    mostWaiting = Math.max(mostWaiting, lines.size);
  }
  lines.close();
}

function* worker(name: string): tinyio.Coro<void> {
  for (;;) {
    const [line, ok] = yield lines.get();
    if (!ok) return;
    yield tinyio.sleep(20); // the slow part
    yield results.put(`${name}: ${line.toUpperCase()}`);
  }
}

function* collector(): tinyio.Coro<string[]> {
  const all: string[] = [];
  for (;;) {
    const [result, ok] = yield results.get();
    if (!ok) return all;
    all.push(result);
  }
}

function* main(): tinyio.Coro<string[]> {
  const collected = collector();
  yield new Set([collected]);
  yield [producer(), worker("w1"), worker("w2"), worker("w3")];
  results.close(); // every worker has returned: no more results
  return yield collected;
}

const all = new tinyio.Loop().run(main());
console.log(all.map((line) => line.split(": ")[1]).sort());
console.log(`${all.length} lines, at most ${mostWaiting} waiting at once`);

// Prints:
//   [ 'ALPHA', 'BETA', 'DELTA', 'EPSILON', 'GAMMA', 'ZETA' ]
//   6 lines, at most 2 waiting at once
