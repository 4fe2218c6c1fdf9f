// W2 chain: coroutine i waits on coroutine i+1, down to depth D, where the
// last one returns 0 and each level adds 1 on the way back up. We check the
// result is D, and report the wall time per level. A contender whose
// runtime recurses on the JavaScript stack to start the next coroutine
// throws a RangeError (Maximum call stack size exceeded) at some depth: we
// report "overflow" for it instead of a number.
//
// "Waits on" means a separate coroutine, not inline delegation:
//   tinyio    `yield chain(d - 1)`
//   native    `await chain(d - 1)`     (the call runs to its first await)
//   effection `yield* (yield* spawn(() => chain(d - 1)))`
//   co        `yield chain(d - 1)`     (co runs the yielded generator)
//
// Five small warm-up chains (depth 1,000) run first.

import * as tinyio from "../tinyio.ts";
import { run, spawn, type Operation } from "effection";
import co from "co";
import { check, intFlag, main, now, type Metrics } from "./common.ts";

type Chain = (depth: number) => Promise<number> | number;

function* tinyChain(d: number): tinyio.Coro<number> {
  return d === 0 ? 0 : 1 + (yield tinyChain(d - 1));
}
const tinyioChain: Chain = (depth) => new tinyio.Loop().run(tinyChain(depth));

async function nativeChainFn(d: number): Promise<number> {
  return d === 0 ? 0 : 1 + (await nativeChainFn(d - 1));
}
const nativeChain: Chain = (depth) => nativeChainFn(depth);

function* effChain(d: number): Operation<number> {
  if (d === 0) return 0;
  const child = yield* spawn(() => effChain(d - 1));
  return 1 + (yield* child);
}
const effectionChain: Chain = (depth) => run(() => effChain(depth));

function* coChainFn(d: number): Generator<unknown, number, unknown> {
  return d === 0 ? 0 : 1 + ((yield coChainFn(d - 1)) as number);
}
const coChain: Chain = (depth) => co(coChainFn, depth);

// A stack overflow surfaces as a RangeError, possibly wrapped by the
// contender (tinyio would wrap nothing: it does not recurse).
function isOverflow(error: unknown): boolean {
  for (let e: unknown = error; e instanceof Error; e = (e as Error).cause) {
    if (e instanceof RangeError && /call stack/i.test(e.message)) return true;
    if (e instanceof AggregateError && e.errors.some(isOverflow)) return true;
  }
  return false;
}

function measure(chain: Chain) {
  return async (f: Record<string, string>): Promise<Metrics> => {
    const depth = intFlag(f, "depth");
    for (let i = 0; i < 5; i++) check((await chain(1000)) === 1000, "warm-up chain");
    const t0 = now();
    let out: number;
    try {
      out = await chain(depth);
    } catch (error) {
      if (isOverflow(error)) return { usPerLevel: "overflow", nsPerLevel: "overflow" };
      throw error;
    }
    const wall = now() - t0;
    check(out === depth, `chain returned ${out}, expected ${depth}`);
    return { usPerLevel: (wall * 1e3) / depth, nsPerLevel: (wall * 1e6) / depth, wallMs: wall };
  };
}

await main({
  tinyio: measure(tinyioChain),
  native: measure(nativeChain),
  effection: measure(effectionChain),
  co: measure(coChain),
});
