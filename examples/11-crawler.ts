// 11: a small web crawler, putting it all together. A local server serves
// linked pages, some slow and one that never answers. Under `toPromise` we
// fetch at most three pages at once (Semaphore), give each request 500 ms
// (timeout), and hash each body on a worker thread (runInThread). Then a
// second crawl meets a broken page: the crawler throws, every request still
// in flight is aborted, every `finally` runs, and the error comes out.
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as tinyio from "../tinyio.ts";

// path: [delay in ms (Infinity: never answers), HTTP status, links]
const site: Record<string, [number, number, string[]]> = {
  "/": [0, 200, ["/about", "/blog", "/docs"]],
  "/about": [50, 200, ["/"]],
  "/blog": [150, 200, ["/blog/1", "/blog/2", "/stuck"]],
  "/blog/1": [0, 200, ["/blog"]],
  "/blog/2": [100, 200, ["/", "/about"]],
  "/docs": [250, 200, ["/about"]],
  "/stuck": [Infinity, 200, []],
  "/v2": [0, 200, ["/docs", "/stuck", "/broken"]], // the second crawl starts here
  "/broken": [0, 500, []],
};
let open = 0, most = 0;
const hungUp: string[] = [], closed: Promise<void>[] = [];
const server = http.createServer((request, response) => {
  const path = request.url!, [delay, status, links] = site[path];
  most = Math.max(most, ++open);
  const html = links.map((to) => `<a href="${to}">${to}</a>`).join("\n");
  const timer = delay < Infinity ? setTimeout(() => response.writeHead(status).end(html), delay) : undefined;
  closed.push(new Promise((resolve) => response.on("close", () => {
    open--;
    clearTimeout(timer);
    if (!response.writableEnded) hungUp.push(path); // the client went away first
    resolve();
  })));
});
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

// Runs on a worker thread: self-contained, it loads node:crypto there.
async function sha256(text: string): Promise<string> {
  const { createHash } = await import("node:crypto");
  return createHash("sha256").update(text).digest("hex");
}

async function crawl(start: string): Promise<void> {
  const seen = new Set<string>(), permits = new tinyio.Semaphore(3);
  const report: [string, string][] = []; // [path, what happened]
  let cleanedUp = 0;
  function* visit(path: string): tinyio.Coro<void> {
    if (seen.has(path)) return;
    seen.add(path);
    try {
      let answer;
      { // a permit for the request only, not for the hashing
        using _ = yield permits.acquire();
        // `timeout` gets the fromPromise coroutine itself, so its TimeoutError
        // aborts the fetch's signal, as a cancellation would.
        answer = yield tinyio.timeout(tinyio.fromPromise(async (signal) => {
          const response = await fetch(base + path, { signal });
          return { status: response.status, body: await response.text() };
        }), 500);
      }
      const [page, ok] = answer;
      if (!ok) return void report.push([path, "timed out"]);
      if (page.status !== 200) throw new Error(`${path} answered HTTP ${page.status}`);
      const hash: string = yield tinyio.runInThread(sha256, page.body);
      const links = [...page.body.matchAll(/href="([^"]+)"/g)].map((m) => m[1]);
      report.push([path, `sha256 ${hash.slice(0, 12)}, links to ${links.join(" ")}`]);
      yield links.map(visit); // follow them all at once; the permits hold them back
    } catch (e) {
      report.push([path, (e as Error).name]); // our error, or a CancelledError
      throw e;
    } finally {
      cleanedUp++;
    }
  }
  try {
    await tinyio.toPromise(visit(start));
    console.log(`crawl from ${start}: done`);
  } catch (e) {
    console.log(`crawl from ${start}: toPromise rejected with ${e}`);
  }
  await Promise.all(closed); // until the server has seen every request end
  report.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)); // by path, in order within one
  for (const [path, what] of report) console.log(`  ${path.padEnd(8)} ${what}`);
  console.log(`  finally ran for ${cleanedUp} of ${seen.size} pages; at most ${most} requests at once`);
  console.log(`  the server saw the client hang up on: ${hungUp.splice(0).sort().join(", ")}`);
  most = 0;
}

try {
  await crawl("/");
  await crawl("/v2");
} finally {
  server.closeAllConnections();
  server.close();
}

// Prints:
//   crawl from /: done
//     /        sha256 7105cb8c6a2f, links to /about /blog /docs
//     /about   sha256 aa6331f05414, links to /
//     /blog    sha256 0e78225dd696, links to /blog/1 /blog/2 /stuck
//     /blog/1  sha256 c072672d1031, links to /blog
//     /blog/2  sha256 2dd5f030d51b, links to / /about
//     /docs    sha256 9b04842cf6d1, links to /about
//     /stuck   timed out
//     finally ran for 7 of 7 pages; at most 3 requests at once
//     the server saw the client hang up on: /stuck
//   crawl from /v2: toPromise rejected with Error: /broken answered HTTP 500
//     /broken  Error
//     /docs    CancelledError
//     /stuck   CancelledError
//     /v2      sha256 f4457423adf2, links to /docs /stuck /broken
//     /v2      CancelledError
//     finally ran for 4 of 4 pages; at most 3 requests at once
//     the server saw the client hang up on: /docs, /stuck
