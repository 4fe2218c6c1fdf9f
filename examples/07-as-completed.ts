// 07: results in the order they finish. `yield [a, b, c]` returns results in
// the order asked for; `asCompleted` starts them all in the background and
// hands them back one by one as each finishes.
import * as tinyio from "../tinyio.ts";

function* after(ms: number, name: string): tinyio.Coro<string> {
  yield tinyio.sleep(ms);
  return name;
}

function* main(): tinyio.Coro<void> {
  const inOrder = yield [after(300, "slow"), after(100, "fast"), after(200, "medium")];
  console.log(`gathered: ${inOrder.join(", ")}`);

  const jobs = [after(300, "slow"), after(100, "fast"), after(200, "medium")];
  for (const next of yield tinyio.asCompleted(jobs)) {
    console.log(`finished: ${yield next}`);
  }
}

new tinyio.Loop().run(main());

// Prints:
//   gathered: slow, fast, medium
//   finished: fast
//   finished: medium
//   finished: slow
