// The benchmark runner: `npm run bench` (full) or `npm run bench -- --quick`.
//
// For every workload, size and repetition, each contender runs in its own
// fresh child process:
//
//     node --import tsx [--expose-gc] bench/<workload>.ts --contender=<name> <size flags>
//
// which prints one JSON line of measurements (see bench/common.ts). The
// repetitions are interleaved (rep 1 of every contender, then rep 2, ...),
// so that drift of a shared machine hits every contender alike. We report
// the median and the min-max of each measurement, and tinyio's ratio to
// each contender (tinyio's median / theirs: below 1, tinyio is lower).
//
// A child that fails (a wrong sum or count, a crash) fails the whole run at
// once: we print its stderr and exit with code 1. A child that runs past the
// time limit is reported as "timeout"; a contender that is clearly too slow
// for a bigger size (by linear extrapolation of the smaller one) is skipped
// there. Both are marked in the tables, never silently dropped.
//
// Flags:
//   --quick         smaller sizes, 3 repetitions (under two minutes)
//   --reps=N        repetitions (default 5, quick 3)
//   --only=W1,W4b   run only these workloads
//   --out=FILE      where to write the page (default docs/benchmarks.md;
//                   --out= (empty) writes nothing)

import { spawnSync, execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, totalmem, type as osType, release as osRelease } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { flags } from "./common.ts";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");

const f = flags();
const quick = f.quick === "true";
const reps = Number(f.reps ?? (quick ? 3 : 5));
const only = f.only?.split(",").map((s) => s.trim().toLowerCase());
const out = f.out ?? join(root, "docs", "benchmarks.md");
// A child running longer than this is stopped and reported as "timeout".
const TIMEOUT_S = quick ? 12 : 150;
// Once a contender's repetitions of one size have taken this long in total,
// it gets no more repetitions of that size (the table shows how many ran).
const CELL_BUDGET_S = quick ? 5 : 60;

// Workloads
// ---------

type Variant = { label: string; size: number; args: string[] };
type Column = { metric: string; label: string; ratio: boolean };
type Workload = {
  id: string;
  title: string;
  file: string;
  nodeFlags?: string[];
  contenders: string[];
  variants: Variant[];
  columns: Column[];
  // For the page: what is measured, in a few sentences of markdown.
  about: string;
};

const CORO = ["tinyio", "native", "effection", "co"];
const THREADS = ["tinyio", "minimal", "piscina", "workerpool"];
const num = (n: number) => n.toLocaleString("en-US");

const workloads: Workload[] = [
  {
    id: "W1",
    title: "W1 gather-yield: ns per pause-step (lower is better)",
    file: "w1-gather.ts",
    contenders: [...CORO, "floor"],
    variants: (quick ? [10_000] : [10_000, 100_000]).map((n) => ({ label: `N=${num(n)}`, size: n, args: [`--n=${n}`, "--k=100"] })),
    columns: [{ metric: "nsPerStep", label: "ns/step", ratio: true }],
    about: "A root gathers N children; each pauses K=100 times (tinyio `yield;`, native `await null`, effection an action that resolves at once, co `yield Promise.resolve()`; floor: bare generators stepped round-robin through an array by a plain loop, no event loop at all) and returns its index. The sum of the indices is checked. Reported: wall time / (N × K), after a warm-up run (N=1,000) in the same process.",
  },
  {
    id: "W2",
    title: "W2 chain: µs per level (lower is better)",
    file: "w2-chain.ts",
    contenders: CORO,
    variants: (quick ? [10_000, 100_000] : [10_000, 1_000_000]).map((d) => ({ label: `depth ${num(d)}`, size: d, args: [`--depth=${d}`] })),
    columns: [{ metric: "usPerLevel", label: "µs/level", ratio: true }],
    about: "Coroutine i waits on coroutine i+1 (a separate coroutine, not inline delegation: tinyio `yield chain(d-1)`, native `await chain(d-1)`, effection `spawn` then join, co `yield chain(d-1)`), down to depth D; the result D is checked. Five warm-up chains of depth 1,000 run first. Reported: wall time / D, or `overflow` when the contender recursed on the JavaScript stack and threw a RangeError (Node's default stack size). Native async functions run the callee synchronously up to its first `await`, so their depth limit depends on the stack size and on JIT tiering: after the warm-up they usually fit 10,000 levels.",
  },
  {
    id: "W3",
    title: "W3 sleep-storm: overshoot and CPU, ms (lower is better)",
    file: "w3-sleep.ts",
    contenders: CORO,
    variants: [quick ? 500 : 2000].map((max) => ({ label: `0..${num(max)} ms`, size: max, args: ["--n=10000", `--max=${max}`] })),
    columns: [
      { metric: "overshootMs", label: "overshoot ms", ratio: true },
      { metric: "cpuMs", label: "CPU ms", ratio: true },
    ],
    about: "10,000 coroutines each sleep a seeded-random time in 0..MAX ms (the same times for all), gathered (tinyio `sleep`, native and co `setTimeout` of timers/promises, effection `sleep`). Checked: all woke, none more than 2 ms early (Node's own timers count whole milliseconds of a clock cached per turn, so they may fire a fraction of a millisecond early). Reported: overshoot = wall time − the longest sleep (it includes starting the 10,000 coroutines), and the process CPU time (user + system, `process.cpuUsage`) over the storm.",
  },
  {
    id: "W4",
    title: "W4 thread round trip: µs per call (lower is better)",
    file: "w4-threads.ts",
    contenders: THREADS,
    variants: [{ label: "500 calls", size: 500, args: ["--mode=roundtrip", "--calls=500"] }],
    columns: [
      { metric: "coldUsPerCall", label: "cold µs/call", ratio: true },
      { metric: "warmUsPerCall", label: "warm µs/call", ratio: true },
    ],
    about: "500 calls of `x => x + 1`, all in flight at once (gathered), on a pool bounded at min(32, availableParallelism() + 4) workers for every contender: tinyio `runInThread`, the hand-rolled floor `bench/minimal-pool.ts` (MessageChannel per worker, function sent as text and compiled once), piscina (`minThreads` = `maxThreads` = the bound; without `minThreads` it ran two of W4b's three calls on one worker), workerpool (`exec` of a function). The sum is checked. Cold: the first batch in a fresh process, pool creation and worker start-up included. Warm: the second batch. Reported: batch wall time / 500. Workers inherit `--import tsx` from the parent, for every contender.",
  },
  {
    id: "W4b",
    title: "W4b blocking calls in threads: wall ms for three 300 ms calls (ideal 300)",
    file: "w4-threads.ts",
    contenders: THREADS,
    variants: [{ label: "3 × 300 ms", size: 3, args: ["--mode=block", "--ms=300"] }],
    columns: [
      { metric: "coldMs", label: "cold ms", ratio: true },
      { metric: "warmMs", label: "warm ms", ratio: true },
    ],
    about: "Three calls that each busy-wait 300 ms in the thread, gathered: with enough workers they run side by side in 300 ms. Cold: first batch in a fresh process; warm: the second. Same pools as W4. On a 2-core machine the three spinning threads and the main thread compete for the cores, which costs every contender a few milliseconds.",
  },
  {
    id: "W5",
    title: "W5 memory: 100,000 coroutines suspended on one event (lower is better)",
    file: "w5-memory.ts",
    nodeFlags: ["--expose-gc"],
    contenders: CORO,
    variants: [{ label: "N=100,000", size: 100_000, args: ["--n=100000"] }],
    columns: [
      { metric: "heapBytesPerCoro", label: "heap B/coro", ratio: true },
      { metric: "rssBytesPerCoro", label: "RSS B/coro", ratio: true },
      { metric: "releaseMs", label: "release ms", ratio: true },
    ],
    about: "100,000 coroutines all wait on one event (tinyio `Event.wait()`, a native promise, effection `withResolvers()` in spawned tasks, co a yielded promise). With `--expose-gc`, after a full GC: V8 `heapUsed` and RSS while all are suspended minus before any was created, per coroutine (this includes the coroutine objects and the gather). Then the event is set (the promise resolved): release = time until every coroutine has finished and the root knows it. The sum of the results is checked.",
  },
  {
    id: "W6",
    title: "W6 error fan-out: ms from the throw until the caller sees it (lower is better)",
    file: "w6-errors.ts",
    contenders: CORO,
    variants: [{ label: "10,000 sleepers", size: 10_000, args: ["--n=10000"] }],
    columns: [
      { metric: "throwToRaiseMs", label: "throw→raise ms", ratio: true },
      { metric: "finallyRan", label: "finally blocks run", ratio: false },
    ],
    about: "10,000 coroutines sleep 60 s inside try/finally; one more throws after 10 ms. Reported: time from the throw until the error comes out at the top (tinyio: out of `run`; native and co: `Promise.all` rejects, then `abort()` of the AbortController all sleeps got, `Promise.allSettled`, rethrow; effection: `run(() => all([...]))` rejects), and the number of finally blocks that had run by then. The run fails unless the error is the one thrown and all 10,000 finally blocks ran.",
  },
];

// Running the children
// --------------------

type Value = number | string;
type Cell = { values: Value[]; seconds: number; note?: string };

function runChild(w: Workload, v: Variant, contender: string): { metrics?: Record<string, Value>; seconds: number; timedOut?: boolean } {
  const args = ["--import", "tsx", ...(w.nodeFlags ?? []), join(here, w.file), `--contender=${contender}`, ...v.args];
  const t0 = performance.now();
  const child = spawnSync(process.execPath, args, { cwd: root, encoding: "utf8", timeout: TIMEOUT_S * 1000, maxBuffer: 64 << 20 });
  const seconds = (performance.now() - t0) / 1000;
  if (child.error && (child.error as NodeJS.ErrnoException).code === "ETIMEDOUT") return { seconds, timedOut: true };
  const lines = child.stdout.trim().split("\n");
  let metrics: Record<string, Value> | undefined;
  try {
    metrics = JSON.parse(lines[lines.length - 1]);
  } catch {
    metrics = undefined;
  }
  if (child.status !== 0 || metrics === undefined) {
    console.error(`\n\n*** BENCHMARK FAILED: ${w.id} ${v.label} ${contender} (exit ${child.status}, signal ${child.signal})`);
    console.error(`*** node ${args.join(" ")}`);
    console.error(child.stderr || child.stdout);
    process.exit(1);
  }
  return { metrics, seconds };
}

const results = new Map<string, Map<string, Cell>>(); // key `${w.id} ${v.label} ${metric}` -> contender -> cell
const cellKey = (w: Workload, v: Variant, metric: string) => `${w.id}|${v.label}|${metric}`;

function record(w: Workload, v: Variant, contender: string, update: (cell: Cell, metric: string) => void): void {
  for (const c of w.columns) {
    const key = cellKey(w, v, c.metric);
    if (!results.has(key)) results.set(key, new Map());
    const row = results.get(key)!;
    if (!row.has(contender)) row.set(contender, { values: [], seconds: 0 });
    update(row.get(contender)!, c.metric);
  }
}

function runWorkload(w: Workload): void {
  // contender -> why it is out of the remaining sizes
  const skip = new Map<string, string>();
  for (const [vi, v] of w.variants.entries()) {
    const spent = new Map<string, number>(); // seconds of children so far, this size
    const runs = new Map<string, number>();
    for (let rep = 1; rep <= reps; rep++) {
      for (const contender of w.contenders) {
        if (skip.has(contender)) continue;
        if ((spent.get(contender) ?? 0) >= CELL_BUDGET_S) continue;
        process.stderr.write(`  ${w.id} ${v.label} rep ${rep}/${reps} ${contender} ... `);
        const r = runChild(w, v, contender);
        spent.set(contender, (spent.get(contender) ?? 0) + r.seconds);
        runs.set(contender, (runs.get(contender) ?? 0) + 1);
        if (r.timedOut) {
          process.stderr.write(`timeout (> ${TIMEOUT_S} s)\n`);
          record(w, v, contender, (cell) => (cell.note = `timeout (> ${TIMEOUT_S} s)`));
          skip.set(contender, `skipped (timed out at ${v.label})`);
          continue;
        }
        process.stderr.write(`${r.seconds.toFixed(1)} s\n`);
        record(w, v, contender, (cell, metric) => {
          cell.values.push(r.metrics![metric]);
          cell.seconds += r.seconds;
        });
      }
    }
    // The bigger sizes: skip whoever would clearly run past the time limit.
    const next = w.variants[vi + 1];
    for (const contender of w.contenders) {
      if (next === undefined || skip.has(contender)) continue;
      const n = runs.get(contender) ?? 0;
      const perRun = n > 0 ? (spent.get(contender) ?? 0) / n : 0;
      const estimate = perRun * (next.size / v.size);
      if (estimate > TIMEOUT_S) skip.set(contender, `skipped (est. ${estimate.toFixed(0)} s > ${TIMEOUT_S} s limit)`);
    }
    for (const [contender, why] of skip) {
      for (const later of w.variants.slice(vi + 1)) record(w, later, contender, (cell) => (cell.note ??= why));
    }
  }
}

// Tables
// ------

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmt(x: number): string {
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

// A cell's median if all its values are numbers; otherwise its word.
function summary(cell: Cell | undefined): { text: string; median?: number } {
  if (cell === undefined) return { text: "—" };
  if (cell.values.length === 0) return { text: cell.note ?? "—" };
  // Words (such as "overflow") in some runs, numbers in others: the median
  // of the numbers, and how many runs gave the word.
  const words = cell.values.filter((x): x is string => typeof x === "string");
  const xs = cell.values.filter((x): x is number => typeof x === "number");
  if (xs.length === 0) return { text: words[0] };
  const m = median(xs);
  let text = xs.length > 1 ? `${fmt(m)} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})` : fmt(m);
  if (words.length > 0) text += `; ${words[0]} in ${words.length} of ${cell.values.length} runs`;
  else if (xs.length < reps) text += ` [${xs.length} run${xs.length > 1 ? "s" : ""}]`;
  if (cell.note !== undefined) text += `, then ${cell.note}`;
  return { text, median: m };
}

function table(w: Workload): string {
  const head = ["contender"];
  for (const v of w.variants) {
    for (const c of w.columns) {
      const label = w.variants.length > 1 ? `${v.label}: ${c.label}` : c.label;
      head.push(label);
      if (c.ratio) head.push("tinyio ÷");
    }
  }
  const rows = [head, head.map(() => "---")];
  for (const contender of w.contenders) {
    const row = [contender];
    for (const v of w.variants) {
      for (const c of w.columns) {
        const cells = results.get(cellKey(w, v, c.metric));
        const mine = summary(cells?.get(contender));
        row.push(mine.text);
        if (!c.ratio) continue;
        const tiny = summary(cells?.get("tinyio"));
        if (contender === "tinyio") row.push(tiny.median !== undefined ? "1" : "—");
        else if (tiny.median !== undefined && mine.median !== undefined && mine.median !== 0) row.push(`${(tiny.median / mine.median).toFixed(2)}×`);
        else row.push("—");
      }
    }
    rows.push(row);
  }
  return rows.map((r) => `| ${r.join(" | ")} |`).join("\n");
}

// The page
// --------

function version(pkg: string): string {
  try {
    return JSON.parse(readFileSync(join(root, "node_modules", pkg, "package.json"), "utf8")).version;
  } catch {
    return "?";
  }
}

function machine(): string {
  const node = execFileSync(process.execPath, ["--version"], { encoding: "utf8" }).trim();
  const cpu = cpus();
  const packages = ["effection", "co", "piscina", "workerpool", "tsx", "typescript"].map((p) => `${p} ${version(p)}`).join(", ");
  return [
    `- Node.js: ${node} (children run as \`node --import tsx\`)`,
    `- CPU: ${cpu[0]?.model ?? "?"}, ${cpu.length} cores (\`os.availableParallelism()\` = ${availableParallelism()}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM`,
    `- OS: ${osType()} ${osRelease()}`,
    `- Packages: ${packages}`,
  ].join("\n");
}

function page(tables: string, startedAt: Date, minutes: number): string {
  return `---
title: Benchmarks
---

# Benchmarks

How tinyio compares, on the same machine in the same run, with native
async/await, [effection](https://frontside.com/effection) 4 and
[co](https://github.com/tj/co) for coroutines, and with a hand-rolled minimal
worker pool, [piscina](https://github.com/piscinajs/piscina) and
[workerpool](https://github.com/josdejong/workerpool) for threads.

## How to run

\`\`\`sh
npm run bench              # full: every size, 5 repetitions (several minutes)
npm run bench -- --quick   # smaller sizes, 3 repetitions (under two minutes)
npm run bench -- --only=W1,W4b --reps=3 --out=   # a subset, writes no page
\`\`\`

The runner is \`bench/main.ts\`; each workload is one file, \`bench/w*.ts\`,
holding every contender. Each contender runs in its own fresh child process
per workload, size and repetition (\`node --import tsx bench/<workload>.ts
--contender=<name> ...\`), which prints its measurements as one JSON line.
Repetitions are interleaved across contenders, so that a shared machine's
drift hits everyone alike. Every result is checked (sums, counts, order,
the error that came out, the finally blocks that ran): a wrong one fails the
run with a non-zero exit code. The page is rewritten by every run.

Each table cell is the **median (min–max)** over the repetitions; **tinyio ÷**
is tinyio's median divided by that contender's: below 1, tinyio's number is
lower (better, for every measurement here). Absolute times drift on a shared
machine; ratios within one run hold better. A child running longer than the
limit (${TIMEOUT_S} s in this mode) reads \`timeout\`; a contender whose time at a
smaller size extrapolates (linearly) past the limit is \`skipped\` at the
bigger one; a contender whose repetitions of one size took over
${CELL_BUDGET_S} s in total gets no more, and the cell says how many ran.

## What each workload measures

${workloads.map((w) => `- **${w.id}**: ${w.about}`).join("\n")}

## This run

${quick ? "Quick mode" : "Full mode"}, ${reps} repetitions, ${startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC, ${minutes.toFixed(1)} minutes.

${machine()}

${tables}
`;
}

// Main
// ----

const startedAt = new Date();
const t0 = performance.now();
const chosen = workloads.filter((w) => only === undefined || only.includes(w.id.toLowerCase()));
if (chosen.length === 0) throw new Error(`--only=${f.only}: no such workload (${workloads.map((w) => w.id).join(", ")})`);
let tables = "";
for (const w of chosen) {
  console.error(`${w.id}`);
  runWorkload(w);
  const t = `### ${w.title}\n\n${table(w)}\n`;
  console.log(`\n${t}`);
  tables += `${t}\n`;
}
const minutes = (performance.now() - t0) / 60_000;
console.error(`done in ${minutes.toFixed(1)} minutes`);
if (out !== "") {
  writeFileSync(out, page(tables.trimEnd(), startedAt, minutes));
  console.error(`wrote ${out}`);
}
