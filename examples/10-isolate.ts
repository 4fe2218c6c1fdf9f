// 10: isolating a failure. Usually one error cancels everything. `isolate`
// runs a sub-tree in a nested loop: if it fails, only that sub-tree is
// cancelled and we get `[error, false]`; the rest carries on.
import * as tinyio from "../tinyio.ts";

function* flaky(): tinyio.Coro<string> {
  yield tinyio.sleep(50);
  throw new Error("flaky failed");
}

function* steady(): tinyio.Coro<string> {
  yield tinyio.sleep(100); // still running when flaky fails
  return "steady finished";
}

function* settings(): tinyio.Coro<string> {
  yield tinyio.sleep(10);
  return "settings";
}

function* useSettings(shared: tinyio.Coro<string>): tinyio.Coro<string> {
  return `used ${yield shared}`;
}

function* main(): tinyio.Coro<void> {
  const [[error, ok], other] = yield [tinyio.isolate(flaky()), steady()];
  console.log(ok, (error as Error).message, "|", other);

  // A coroutine of this loop enters an isolated one through `copy`.
  const shared = settings();
  const [a, b] = yield [
    tinyio.isolate(useSettings(yield tinyio.copy(shared))),
    tinyio.isolate(useSettings(yield tinyio.copy(shared))),
  ];
  console.log(a, b, yield shared);
}

new tinyio.Loop().run(main());

// Prints:
//   false flaky failed | steady finished
//   [ 'used settings', true ] [ 'used settings', true ] settings
