// 09: promises. `toPromise(coro)` runs a loop from Node's own event loop, so
// sockets and timers keep working; inside it, `fromPromise` waits for a
// promise. Here: five requests to a local server, at most two at a time.
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as tinyio from "../tinyio.ts";

let inFlight = 0;
let most = 0;
const server = http.createServer((request, response) => {
  most = Math.max(most, ++inFlight);
  setTimeout(() => {
    inFlight--;
    response.end(`hello ${request.url}`);
  }, 100);
});
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
const { port } = server.address() as AddressInfo;

function* get(path: string, permits: tinyio.Semaphore): tinyio.Coro<string> {
  using _ = yield permits.acquire();
  // Given a function, fromPromise passes a signal that aborts on cancellation.
  const response: Response = yield tinyio.fromPromise((signal) =>
    fetch(`http://127.0.0.1:${port}${path}`, { signal }),
  );
  return yield tinyio.fromPromise(response.text());
}

function* main(): tinyio.Coro<string[]> {
  const permits = new tinyio.Semaphore(2);
  return yield ["/a", "/b", "/c", "/d", "/e"].map((path) => get(path, permits));
}

try {
  console.log(await tinyio.toPromise(main()));
  console.log(`at most ${most} requests at once`);
} finally {
  server.closeAllConnections();
  server.close();
}

// Prints:
//   [ 'hello /a', 'hello /b', 'hello /c', 'hello /d', 'hello /e' ]
//   at most 2 requests at once
