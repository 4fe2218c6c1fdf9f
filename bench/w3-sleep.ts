// W3 sleep-storm: N coroutines (10,000) each sleep a seeded-random time in
// 0..MAX ms (the same times for every contender), gathered. We check every
// coroutine woke and that none woke early, and report
//   - overshoot: wall time minus the longest sleep (how late the last
//     wake-up came), and
//   - CPU: user + system CPU time of the process during the storm
//     (`process.cpuUsage`), i.e. what the timers cost while waiting.
//
//   tinyio    `yield tinyio.sleep(ms)`                  (the loop's timer heap)
//   native    `await setTimeout(ms)` from timers/promises
//   effection `yield* sleep(ms)`                         (a Node setTimeout)
//   co        `yield setTimeout(ms)` from timers/promises

import * as tinyio from "../tinyio.ts";
import { all, run, sleep, type Operation } from "effection";
import co from "co";
import { setTimeout as delay } from "node:timers/promises";
import { check, cpuMs, intFlag, main, now, seeded, type Metrics } from "./common.ts";

// Each sleeper returns how late it woke relative to its own deadline (ms).
type Storm = (times: number[], t0: number) => Promise<number[]> | number[];

function* tinySleeper(ms: number, t0: number): tinyio.Coro<number> {
  yield tinyio.sleep(ms);
  return now() - t0 - ms;
}
const tinyioStorm: Storm = (times, t0) => new tinyio.Loop().run((function* (): tinyio.Coro<number[]> {
  return yield times.map((ms) => tinySleeper(ms, t0));
})());

async function nativeSleeper(ms: number, t0: number): Promise<number> {
  await delay(ms);
  return now() - t0 - ms;
}
const nativeStorm: Storm = (times, t0) => Promise.all(times.map((ms) => nativeSleeper(ms, t0)));

function* effSleeper(ms: number, t0: number): Operation<number> {
  yield* sleep(ms);
  return now() - t0 - ms;
}
const effectionStorm: Storm = (times, t0) => run(() => all(times.map((ms) => effSleeper(ms, t0))));

function* coSleeper(ms: number, t0: number): Generator<unknown, number, unknown> {
  yield delay(ms);
  return now() - t0 - ms;
}
const coStorm: Storm = (times, t0) => co(function* () {
  return (yield times.map((ms) => co(coSleeper, ms, t0))) as number[];
});

function measure(storm: Storm) {
  return async (f: Record<string, string>): Promise<Metrics> => {
    const n = intFlag(f, "n", 10_000);
    const max = intFlag(f, "max");
    const random = seeded(intFlag(f, "seed", 42));
    const times = Array.from({ length: n }, () => random() * max);
    const longest = Math.max(...times);
    // Start on a fresh turn of Node's event loop: Node's timers measure from
    // the loop's cached clock, which is stale late in a long turn.
    await new Promise((resolve) => setImmediate(resolve));
    const cpu0 = process.cpuUsage();
    const t0 = now();
    const lateness = await storm(times, t0);
    const wall = now() - t0;
    const cpu = cpuMs(cpu0);
    check(lateness.length === n, `${lateness.length} sleepers finished, expected ${n}`);
    // Node's timers count whole milliseconds of a clock cached per turn of
    // its event loop, so they may fire up to a millisecond or so early by
    // performance.now(): allow 2 ms. (This catches a broken sleep, not jitter.)
    const early = lateness.filter((late) => late < -2).length;
    check(early === 0, `${early} sleepers woke more than 2 ms early (earliest ${Math.min(...lateness).toFixed(2)} ms)`);
    return { overshootMs: wall - longest, cpuMs: cpu, wallMs: wall, longestMs: longest, earliestMs: Math.min(...lateness) };
  };
}

await main({
  tinyio: measure(tinyioStorm),
  native: measure(nativeStorm),
  effection: measure(effectionStorm),
  co: measure(coStorm),
});

