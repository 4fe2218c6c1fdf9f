// W4 thread round trip, and W4b blocking calls in threads.
//
// --mode=roundtrip (W4): 500 calls of `x => x + 1`, gathered (all in flight
//   at once, so the pool's queue is exercised), timed twice in the same
//   process: the first batch is "cold" (the pool is created and its workers
//   start inside the timing), the second "warm" (workers up, code compiled).
//   Reported in microseconds per call (batch wall / 500). We check the sum.
// --mode=block (W4b): three calls that each busy-wait 300 ms in the thread,
//   gathered; wall time of the batch, cold then warm. With enough workers the
//   three run side by side and the ideal is 300 ms.
//
// Every pool gets the same bound, min(32, availableParallelism() + 4), which
// is tinyio's default pool size.
//   tinyio     `yield [runInThread(fn, x), ...]` under `new Loop().run`
//   piscina    `Promise.all(xs.map((x) => pool.run(x)))`, task in piscina-task.ts
//   workerpool `Promise.all(xs.map((x) => pool.exec(fn, [x])))` (function sent as text)
//   minimal    bench/minimal-pool.ts: the hand-rolled floor
// Workers inherit the parent's `--import tsx`, for every contender alike.

import * as tinyio from "../tinyio.ts";
import { Piscina } from "piscina";
import workerpool from "workerpool";
import { availableParallelism } from "node:os";
import { MinimalPool } from "./minimal-pool.ts";
import { check, intFlag, main, now, type Metrics } from "./common.ts";

const POOL_SIZE = Math.min(32, availableParallelism() + 4);

const addOne = (x: number): number => x + 1;
const block = (ms: number): number => {
  const end = performance.now() + ms;
  while (performance.now() < end);
  return ms;
};

// A contender: make the pool (lazily: inside the first timed batch), run a
// batch of calls of `addOne` or `block`, and shut down.
interface Pool {
  batch(fn: "addOne" | "block", xs: number[]): Promise<number[]> | number[];
  close(): Promise<void> | void;
}

function tinyioPool(): Pool {
  const fns = { addOne, block };
  return {
    batch: (fn, xs) => new tinyio.Loop().run((function* (): tinyio.Coro<number[]> {
      return yield xs.map((x) => tinyio.runInThread(fns[fn], x));
    })()),
    close: () => {}, // idle workers never keep the process alive
  };
}

function piscinaPool(): Pool {
  let pool: Piscina | undefined;
  return {
    batch: (fn, xs) => {
      pool ??= new Piscina({ filename: new URL("./piscina-task.ts", import.meta.url).href, minThreads: POOL_SIZE, maxThreads: POOL_SIZE });
      const name = fn === "addOne" ? "default" : "block";
      return Promise.all(xs.map((x) => pool!.run(x, { name }) as Promise<number>));
    },
    close: () => pool?.destroy(),
  };
}

function workerpoolPool(): Pool {
  let pool: ReturnType<typeof workerpool.pool> | undefined;
  const fns = { addOne, block };
  return {
    batch: (fn, xs) => {
      pool ??= workerpool.pool({ maxWorkers: POOL_SIZE, workerType: "thread" });
      return Promise.all(xs.map((x) => pool!.exec(fns[fn], [x]) as Promise<number>));
    },
    close: async () => void (await pool?.terminate()),
  };
}

function minimalPool(): Pool {
  let pool: MinimalPool | undefined;
  const fns = { addOne, block };
  return {
    batch: (fn, xs) => {
      pool ??= new MinimalPool(POOL_SIZE);
      return Promise.all(xs.map((x) => pool!.run(fns[fn], x)));
    },
    close: () => pool?.close(),
  };
}

function measure(make: () => Pool) {
  return async (f: Record<string, string>): Promise<Metrics> => {
    const pool = make();
    if (f.mode === "roundtrip") {
      const calls = intFlag(f, "calls", 500);
      const xs = Array.from({ length: calls }, (_, i) => i);
      const expected = (calls * (calls + 1)) / 2;
      const out: Metrics = {};
      for (const phase of ["cold", "warm"]) {
        const t0 = now();
        const ys = await pool.batch("addOne", xs);
        const wall = now() - t0;
        check(ys.length === calls && ys.reduce((a, b) => a + b, 0) === expected, `${phase} batch: wrong results`);
        out[`${phase}UsPerCall`] = (wall * 1e3) / calls;
      }
      await pool.close();
      return out;
    }
    if (f.mode === "block") {
      const ms = intFlag(f, "ms", 300);
      const out: Metrics = {};
      for (const phase of ["cold", "warm"]) {
        const t0 = now();
        const ys = await pool.batch("block", [ms, ms, ms]);
        const wall = now() - t0;
        check(ys.length === 3 && ys.every((y) => y === ms), `${phase} batch: wrong results`);
        check(wall >= ms, `${phase} batch took ${wall} ms, less than the ${ms} ms it blocks`);
        out[`${phase}Ms`] = wall;
      }
      await pool.close();
      return out;
    }
    throw new Error(`unknown --mode=${f.mode}`);
  };
}

await main({
  tinyio: measure(tinyioPool),
  piscina: measure(piscinaPool),
  workerpool: measure(workerpoolPool),
  minimal: measure(minimalPool),
});
