// Property tests: random programs of coroutines, run by tinyio and checked
// against a model.
//
// fast-check generates a program: a handful of coroutines ("nodes") wired as
// a random DAG (node i may only wait on nodes after it, so the model has no
// cycle unless we add one on purpose). Each node runs a list of operations:
// bare yields, sleeps of 0-20 ms, gathers (plain and `yield* all`),
// background Sets, waits on Events that other coroutines set, semaphores,
// timeouts, `asCompleted`, `yield*` helpers and, in some programs, one or two
// thread calls. A node may be yielded from several places (diamonds). Each
// program is in one of four modes:
//
// - normal: no error. `run` must return what the model computes (a hash of
//   every value each node received, in order), and every coroutine must run
//   to completion exactly once, however many places yield it;
// - throw: one node throws at a random place. `run` must throw that error
//   (or an AggregateError with it first, per the `exceptionGroup` rules),
//   every coroutine that started must have run its `finally` exactly once,
//   none may resume normally after the crash, semaphores and events must be
//   left clean, and no thread may still be at work;
// - deadlock: one node waits on an Event that nothing sets. `run` must fail
//   with `Deadlock`; under `toPromise` (which cannot tell) an AbortSignal
//   ends it;
// - cycle: a node yields one of the nodes that (transitively) waits on it.
//   The loop must fail with `Cycle detected`.
//
// Each program runs under `new Loop().run` and, several programs at once,
// under `toPromise` (they then share Node's event loop, the wake word and the
// default thread pool). Runs use a fixed seed, then a fresh one that is
// printed; to replay a failure, set TINYIO_SEED (and TINYIO_PATH, both printed
// by fast-check). TINYIO_RUNS scales the number of cases.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { Worker } from "node:worker_threads";
import fc from "fast-check";
import * as tinyio from "./tinyio.ts";

type Coro<R = any> = tinyio.Coro<R>;
const here = fileURLToPath(new URL(".", import.meta.url));

// How many cases per property and seed. The sync property runs each case
// once; the async one runs a batch of 1-3 programs per case.
const RUNS = Number(process.env.TINYIO_RUNS ?? 1000);
const FIXED_SEED = 20240607;
const FRESH_SEED = process.env.TINYIO_SEED !== undefined ? Number(process.env.TINYIO_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
const PATH = process.env.TINYIO_PATH;

// Known bugs, reported to the lead, each with a regression spec at the end of
// this file. While one is open, generated programs step around it (so that
// the property can find others); set it to false once fixed.
// - permitGap: a permit taken by `yield sem.acquire()` is lost if the loop
//   crashes after the acquire coroutine finished but before its waiter
//   resumed. Around it: acquire with `yield*` only.
// - fromPromiseGap: `fromPromise(fn)` calls `fn` at once, but aborts its signal
//   only if cancelled after its first step. Around it: create the fromPromise
//   coroutine inside one that delegates to it with `yield*`.
// - sharedSignal: concurrent `toPromise` runs sharing one AbortSignal share
//   one listener (EventTarget keeps one per function); the first run to end
//   removes it, and an abort no longer wakes the others. Around it: each run
//   gets its own signal.
// permitGap is a documented limitation, not a bug we mean to fix: a permit
// taken with a plain `yield sem.acquire()` is the result of a separate
// coroutine, and is lost if its waiter is cancelled or timed out before it
// resumes. `yield* sem.acquire()` has no such gap, so the generated programs
// use that form (README, "Semaphore and Lock").
const OPEN_BUGS = { permitGap: true, fromPromiseGap: false, sharedSignal: false };

// The program description
// -----------------------
//
// A step of a private coroutine or of a critical section: -1 is a bare
// `yield;`, anything else a `sleep(ms)`.
type Steps = number[];

type Op =
  | { k: "yield" }
  | { k: "sleep"; ms: number }
  | { k: "one"; j: number } //                      yield node j
  | { k: "gather"; js: number[]; typed: boolean } // yield [..] or yield* all([..])
  | { k: "bg"; js: number[] } //                    yield new Set([..])
  | { k: "setters" } //                             root only: start the event setters in the background
  | { k: "wait"; e: number; inline: boolean } //    yield (or yield*) events[e].wait()
  | { k: "waitT"; e: number; ms: number } //        events[e].wait(ms): set or timed out, either is fine
  | { k: "set"; e: number } //                      events[e].set(), no yield
  | { k: "sem"; s: number; inner: Steps; inline: boolean } // acquire (yield or yield*), run `inner`, release in finally
  | { k: "tFast"; steps: Steps; value: number } //  timeout(private(steps), 5 s): always on time
  | { k: "tStuck"; ms: number } //                  timeout(waits forever, ms): always times out
  | { k: "tRace"; j: number; ms: number } //        timeout(private yielding node j, ms): either outcome
  | { k: "tSem"; s: number; inner: Steps; inline: boolean; ms: number } // timeout(private holding a permit, ms): either
  | { k: "asCompleted"; js: number[] }
  | { k: "thread"; slot: number; ms: number; async: boolean }
  | { k: "helper"; n: number } //                   yield* helper(n): one bare yield, returns n
  | { k: "isolate"; steps: Steps; fails: boolean; value: number } // isolate(private that returns or throws)
  | { k: "promise"; ms: number } //                 toPromise: fromPromise(a timer's promise); run: sleep
  | { k: "throw" }
  | { k: "orphan" } //                              waits on an Event nothing sets (deadlock mode)
  | { k: "cycle"; j: number }; //                   yields node j, which waits on this one

type Mode = "normal" | "throw" | "deadlock" | "cycle";

type Program = {
  mode: Mode;
  exceptionGroup: boolean | undefined;
  // badCleanup: on its CancelledError, it throws an error of its own;
  // swallow: it catches its CancelledError and returns, or yields again.
  nodes: { ops: Op[]; badCleanup: boolean; swallow: "no" | "return" | "yield" }[];
  // One per event: a coroutine that sleeps/yields, then sets it; or, when
  // `external` and under toPromise, a Node timer that sets it from outside.
  setters: { steps: Steps; external: boolean }[];
  sems: number[]; // capacities
  threads: number; // thread ops (slots 0..threads-1)
};

// The raw shape fast-check generates and shrinks: child references are
// plain naturals, mapped onto valid nodes by `normalize`.
const msArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant(0) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 3 }) },
  { weight: 1, arbitrary: fc.integer({ min: 4, max: 20 }) },
);
const stepArb = fc.oneof({ weight: 1, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: msArb });
const stepsArb = fc.array(stepArb, { maxLength: 3 });
const refsArb = fc.array(fc.nat(), { maxLength: 3 });

const rawOpArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ k: "yield" as const }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant("sleep" as const), ms: msArb }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant("one" as const), r: fc.nat() }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant("gather" as const), rs: refsArb, typed: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant("bg" as const), rs: refsArb }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant("wait" as const), r: fc.nat(), inline: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("waitT" as const), r: fc.nat(), ms: msArb }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant("set" as const), r: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant("sem" as const), r: fc.nat(), inner: stepsArb, inline: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("tFast" as const), steps: stepsArb, value: fc.nat(99) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("tStuck" as const), ms: msArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("tRace" as const), r: fc.nat(), ms: msArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("asCompleted" as const), rs: refsArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("tSem" as const), r: fc.nat(), inner: stepsArb, inline: fc.boolean(), ms: msArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("thread" as const), ms: fc.oneof({ weight: 15, arbitrary: fc.integer({ min: 0, max: 8 }) }, { weight: 1, arbitrary: fc.constant(300) }), async: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("helper" as const), n: fc.nat(99) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("isolate" as const), steps: stepsArb, fails: fc.boolean(), value: fc.nat(99) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("promise" as const), ms: msArb }) },
);
type RawOp = typeof rawOpArb extends fc.Arbitrary<infer T> ? T : never;

const rawProgramArb = fc.record({
  mode: fc.oneof(
    { weight: 5, arbitrary: fc.constant("normal" as const) },
    { weight: 4, arbitrary: fc.constant("throw" as const) },
    { weight: 1, arbitrary: fc.constant("deadlock" as const) },
    { weight: 1, arbitrary: fc.constant("cycle" as const) },
  ),
  exceptionGroup: fc.constantFrom(undefined, false, true),
  nodes: fc.array(
    fc.record({
      ops: fc.array(rawOpArb, { maxLength: 5 }),
      badCleanup: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
      swallow: fc.oneof({ weight: 60, arbitrary: fc.constant("no" as const) }, { weight: 1, arbitrary: fc.constant("return" as const) }, { weight: 1, arbitrary: fc.constant("yield" as const) }),
    }),
    { minLength: 1, maxLength: 8 },
  ),
  setters: fc.array(fc.record({ steps: stepsArb, external: fc.boolean() }), { maxLength: 3 }),
  sems: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
  threadsOn: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  at: fc.record({ node: fc.nat(), pos: fc.nat() }), // where the throw or orphan wait goes
  cycle: fc.record({ path: fc.array(fc.nat(), { maxLength: 4 }), close: fc.nat() }),
});
type RawProgram = typeof rawProgramArb extends fc.Arbitrary<infer T> ? T : never;

// The references a node's operations make to other nodes, in order; `upTo`
// stops at the first operation that never ends (a throw or an orphan wait).
function refsOf(ops: Op[], upTo = true): number[] {
  const refs: number[] = [];
  for (const op of ops) {
    if (upTo && (op.k === "throw" || op.k === "orphan")) break;
    if ("j" in op) refs.push(op.j);
    if ("js" in op) refs.push(...op.js);
  }
  return refs;
}

function reachable(nodes: Program["nodes"]): Set<number> {
  const seen = new Set([0]);
  const todo = [0];
  while (todo.length > 0) for (const j of refsOf(nodes[todo.pop()!].ops)) if (!seen.has(j)) (seen.add(j), todo.push(j));
  return seen;
}

function normalize(raw: RawProgram): Program {
  const n = raw.nodes.length;
  const events = raw.setters.length;
  let threads = 0;
  const nodes = raw.nodes.map(({ ops, badCleanup, swallow }, i) => {
    // Node i may only wait on nodes after it: the program is a DAG.
    const child = (r: number): number | undefined => (i < n - 1 ? i + 1 + (r % (n - i - 1)) : undefined);
    const children = (rs: number[]) => rs.map(child).filter((j): j is number => j !== undefined);
    const convert = (op: RawOp): Op => {
      switch (op.k) {
        case "yield": case "sleep": case "tFast": case "tStuck": case "helper": case "isolate": case "promise":
          return op;
        case "one": { const j = child(op.r); return j === undefined ? { k: "yield" } : { k: "one", j }; }
        case "gather": return { k: "gather", js: children(op.rs), typed: op.typed };
        case "bg": return { k: "bg", js: children(op.rs) };
        // (In cycle mode, a gather: asCompleted waits through events, which
        // the loop cannot follow, so a cycle through it is a deadlock.)
        case "asCompleted": return { k: raw.mode === "cycle" ? "gather" : "asCompleted", js: children(op.rs), typed: false };
        case "tRace": { const j = child(op.r); return j === undefined ? { k: "tStuck", ms: op.ms } : { k: "tRace", j, ms: op.ms }; }
        case "wait": return events === 0 ? { k: "yield" } : { k: "wait", e: op.r % events, inline: op.inline };
        case "waitT": return events === 0 ? { k: "yield" } : { k: "waitT", e: op.r % events, ms: op.ms };
        case "set": return events === 0 ? { k: "yield" } : { k: "set", e: op.r % events };
        case "sem": return raw.sems.length === 0 ? { k: "yield" } : { k: "sem", s: op.r % raw.sems.length, inner: op.inner, inline: op.inline || OPEN_BUGS.permitGap };
        case "tSem": return raw.sems.length === 0 ? { k: "tStuck", ms: op.ms } : { k: "tSem", s: op.r % raw.sems.length, inner: op.inner, inline: op.inline || OPEN_BUGS.permitGap, ms: op.ms };
        case "thread": return raw.threadsOn && threads < 2 ? { k: "thread", slot: threads++, ms: op.ms, async: op.async } : { k: "yield" };
      }
    };
    return { ops: ops.map(convert), badCleanup, swallow };
  });
  if (events > 0) nodes[0].ops.unshift({ k: "setters" });
  // The one thing that goes wrong, if any.
  const at = nodes[raw.at.node % n];
  if (raw.mode === "throw") at.ops.splice(raw.at.pos % (at.ops.length + 1), 0, { k: "throw" });
  if (raw.mode === "deadlock") at.ops.splice(raw.at.pos % (at.ops.length + 1), 0, { k: "orphan" });
  if (raw.mode === "cycle") {
    // Walk down from the root along edges where the parent waits on the
    // child; the last node then yields one of the nodes on the path.
    const path = [0];
    for (const choice of raw.cycle.path) {
      const waits = nodes[path.at(-1)!].ops.flatMap((op) => (op.k === "one" ? [op.j] : op.k === "gather" ? op.js : []));
      if (waits.length === 0) break;
      path.push(waits[choice % waits.length]);
    }
    nodes[path.at(-1)!].ops.push({ k: "cycle", j: path[raw.cycle.close % path.length] });
  }
  // Every node is started by someone: an unreachable node is started in the
  // background by the node before it (reachable, by induction).
  for (let j = 1; j < n; j++) if (!reachable(nodes).has(j)) nodes[j - 1].ops.unshift({ k: "bg", js: [j] });
  return { mode: raw.mode, exceptionGroup: raw.exceptionGroup, nodes, setters: raw.setters, sems: raw.sems, threads };
}

// The model
// ---------
//
// What each node returns when nothing goes wrong: a hash of everything it was
// resumed with, in order. Values that depend on timing (a timed event wait,
// a racing timeout) contribute 0 and are checked separately.
const mix = (h: number, c: number): number => (Math.imul(h, 31) + c) | 0;
const BAD = -999_999; // what a wrong resumption value contributes

function model(program: Program): number[] {
  const memo = new Map<number, number>();
  const value = (i: number): number => {
    if (memo.has(i)) return memo.get(i)!;
    let h = i + 1;
    for (const op of program.nodes[i].ops) {
      switch (op.k) {
        case "set": break;
        case "one": h = mix(h, value(op.j)); break;
        case "gather": h = mix(op.js.reduce((h, j) => mix(h, value(j)), h), op.js.length); break;
        case "asCompleted": h = mix(mix(h, op.js.reduce((sum, j) => (sum + value(j)) | 0, 0)), op.js.length); break;
        case "tFast": h = mix(h, op.value); break;
        case "thread": h = mix(h, op.slot * 7 + 1); break;
        case "helper": h = mix(h, op.n); break;
        case "isolate": h = mix(h, op.fails ? 1 : op.value); break;
        case "promise": h = mix(h, op.ms); break;
        default: h = mix(h, 0);
      }
    }
    memo.set(i, h);
    return h;
  };
  return program.nodes.map((_, i) => value(i));
}

// The interpreter
// ---------------
//
// One execution of a program: fresh coroutines, events and semaphores, and
// a record of what happened. Every coroutine (node, setter or private child)
// counts its starts, completions and `finally`s, and logs each normal
// resumption; once the loop has crashed, a normal resumption is a bug.

class CleanupError extends Error {
  override name = "CleanupError";
}

// The thread's work, in shared memory cells (per slot, 0 or 1): a heartbeat
// at `slot`, ticked every millisecond while it works, so that we can tell
// afterwards whether it still runs; "entered" at 4 + slot, "finished" at
// 8 + slot, and "cleaned up after its abort" at 12 + slot (async only). The
// last cell stays 0, for 1 ms naps. Self-contained: it travels as source.
const ENTERED = 4, FINISHED = 8, CLEANED = 12;
function work(this: tinyio.ThreadContext, sab: SharedArrayBuffer, slot: number, ms: number): number {
  const cells = new Int32Array(sab);
  Atomics.store(cells, 4 + slot, 1);
  const end = Date.now() + ms;
  do {
    Atomics.add(cells, slot, 1);
    Atomics.wait(cells, cells.length - 1, 0, 1);
  } while (Date.now() < end);
  Atomics.store(cells, 8 + slot, 1);
  return slot * 7 + 1;
}

async function workAsync(this: tinyio.ThreadContext, sab: SharedArrayBuffer, slot: number, ms: number): Promise<number> {
  const cells = new Int32Array(sab);
  Atomics.store(cells, 4 + slot, 1);
  Atomics.add(cells, slot, 1);
  const signal = this.signal;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      Atomics.store(cells, 12 + slot, 1);
      reject(signal.reason);
    });
  });
  Atomics.add(cells, slot, 1);
  Atomics.store(cells, 8 + slot, 1);
  return slot * 7 + 1;
}

class Execution {
  readonly program: Program;
  readonly error = new Error("boom (the generated throw)");
  readonly events: tinyio.Event[];
  readonly orphan = new tinyio.Event();
  readonly sems: tinyio.Semaphore[];
  readonly holders: number[];
  readonly beats = new Int32Array(new SharedArrayBuffer(16 * 4));
  readonly coros: (Coro<number> | undefined)[] = [];
  // Per coroutine id ("n3", "s0", "p7"): counts, and the error it caught.
  readonly started = new Map<string, number>();
  readonly completed = new Map<string, number>();
  readonly finallies = new Map<string, number>();
  readonly caught = new Map<string, unknown>();
  readonly cleanupErrors: CleanupError[] = [];
  swallowed = 0;
  readonly waitingOn = new Map<string, number[]>();
  readonly suspended = new Set<string>(); // swallowed by yielding: never resumed, closed with return()
  readonly races: { j: number; result: unknown }[] = [];
  readonly beatsAtCancel: { slot: number; beats: number }[] = [];
  readonly problems: string[] = [];
  log = 0; // normal resumptions so far
  crashed = false;
  threw = false;
  #privates = 0;

  readonly driver: "run" | "toPromise";
  readonly timers: NodeJS.Timeout[] = []; // external setters, cleared when the run ends
  #inner = 0;

  constructor(program: Program, driver: "run" | "toPromise") {
    this.program = program;
    this.driver = driver;
    this.events = program.setters.map(() => new tinyio.Event());
    this.sems = program.sems.map((cap) => new tinyio.Semaphore(cap));
    this.holders = program.sems.map(() => 0);
  }

  root(): Coro<number> {
    return this.coro(0);
  }

  coro(i: number): Coro<number> {
    return (this.coros[i] ??= this.#node(i));
  }

  #resumed(id: string): void {
    this.log++;
    if (this.crashed) this.problems.push(`${id} resumed normally after the loop had crashed`);
  }

  #count(map: Map<string, number>, id: string): void {
    map.set(id, (map.get(id) ?? 0) + 1);
  }

  // Wraps a coroutine body with the bookkeeping every coroutine shares.
  *#tracked<R>(id: string, body: () => Coro<R>, badCleanup = false, swallow: Program["nodes"][number]["swallow"] = "no"): Coro<R> {
    this.#count(this.started, id);
    try {
      const value: R = yield* body();
      this.#count(this.completed, id);
      return value;
    } catch (error) {
      this.caught.set(id, error);
      if (error instanceof tinyio.CancelledError) {
        if (!id.startsWith("i")) this.crashed = true; // (not an isolated loop's own crash)
        // Cancelled only after what it waited on was cancelled (or finished).
        for (const j of this.waitingOn.get(id) ?? []) {
          const child = `n${j}`;
          if (this.started.has(child) && !this.completed.has(child) && !this.caught.has(child)) this.problems.push(`${id} got its CancelledError while ${child}, which it waits on, still ran`);
        }
        // The loop warns, and never resumes it (nor throws in again).
        if (swallow !== "no") this.swallowed++;
        if (swallow === "return") return BAD as R;
        if (swallow === "yield") {
          this.suspended.add(id);
          try {
            yield;
            this.problems.push(`${id} swallowed its CancelledError, yielded, and was resumed`);
          } catch (again) {
            this.problems.push(`${id} swallowed its CancelledError, yielded, and got ${describeError(again)}`);
          }
          return BAD as R;
        }
        if (badCleanup) {
          const cleanup = new CleanupError(`cleanup of ${id} failed`);
          this.cleanupErrors.push(cleanup);
          throw cleanup;
        }
      }
      throw error;
    } finally {
      this.#count(this.finallies, id);
    }
  }

  #node(i: number): Coro<number> {
    const { ops, badCleanup, swallow } = this.program.nodes[i];
    const self = this;
    return this.#tracked(`n${i}`, function* () {
      let h = i + 1;
      for (const op of ops) h = yield* self.#op(`n${i}`, op, h);
      return h;
    }, badCleanup, swallow);
  }

  *#steps(id: string, steps: Steps): Coro<void> {
    for (const step of steps) {
      const v: unknown = yield step < 0 ? undefined : tinyio.sleep(step);
      this.#resumed(id);
      if (v !== undefined) this.problems.push(`${id} resumed with ${String(v)} from a ${step < 0 ? "bare yield" : "sleep"}`);
    }
  }

  #private<R>(body: (id: string) => Coro<R>): { id: string; coro: Coro<R> } {
    const id = `p${this.#privates++}`;
    return { id, coro: this.#tracked(id, () => body(id)) };
  }

  // Yields nodes `js` (one, or a gather), noting that `id` waits on them: if
  // `id` is cancelled meanwhile, they must have finished first.
  *#waitOn<T>(id: string, js: number[], yielded: () => Coro<T>): Coro<T> {
    this.waitingOn.set(id, js);
    try {
      return yield* yielded();
    } finally {
      this.waitingOn.delete(id);
    }
  }

  // Acquires a permit (with `yield` or `yield*`), runs `inner`, gives it back.
  *#holding(id: string, op: { s: number; inner: Steps; inline: boolean }): Coro<void> {
    const permit: tinyio.Release = op.inline ? yield* this.sems[op.s].acquire() : yield this.sems[op.s].acquire();
    this.#resumed(id);
    try {
      if (++this.holders[op.s] > this.program.sems[op.s]) this.problems.push(`semaphore ${op.s} of ${this.program.sems[op.s]} has ${this.holders[op.s]} holders`);
      yield* this.#steps(id, op.inner);
    } finally {
      this.holders[op.s]--;
      permit.release();
    }
  }

  *#helper(id: string, n: number): Coro<number> {
    yield;
    this.#resumed(id);
    return n;
  }

  #undef(v: unknown): number {
    return v === undefined ? 0 : BAD;
  }

  *#op(id: string, op: Op, h: number): Coro<number> {
    const self = this;
    switch (op.k) {
      case "yield": { const v: unknown = yield; this.#resumed(id); return mix(h, this.#undef(v)); }
      case "sleep": { const v: unknown = yield tinyio.sleep(op.ms); this.#resumed(id); return mix(h, this.#undef(v)); }
      case "one": {
        const v: number = yield* this.#waitOn(id, [op.j], function* () { return yield self.coro(op.j); });
        this.#resumed(id);
        return mix(h, v);
      }
      case "gather": {
        const coros = op.js.map((j) => this.coro(j));
        const vs: number[] = yield* this.#waitOn(id, op.js, function* () { return op.typed ? yield* tinyio.all(coros) : yield coros; });
        this.#resumed(id);
        if (!Array.isArray(vs) || vs.length !== op.js.length) return mix(h, BAD);
        return mix(vs.reduce(mix, h), vs.length);
      }
      case "bg": { const v: unknown = yield new Set(op.js.map((j) => this.coro(j))); this.#resumed(id); return mix(h, this.#undef(v)); }
      case "setters": {
        const setters: Coro<void>[] = [];
        this.program.setters.forEach(({ steps, external }, e) => {
          if (external && this.driver === "toPromise") {
            const ms = steps.reduce((sum, step) => sum + Math.max(step, 0), 0);
            this.timers.push(setTimeout(() => self.events[e].set(), ms));
          } else {
            setters.push(this.#tracked(`s${e}`, function* () {
              yield* self.#steps(`s${e}`, steps);
              self.events[e].set();
            }));
          }
        });
        const v: unknown = yield new Set(setters);
        this.#resumed(id);
        return mix(h, this.#undef(v));
      }
      case "wait": {
        const wait = this.events[op.e].wait();
        const v: unknown = op.inline ? yield* wait : yield wait;
        this.#resumed(id);
        if (!this.events[op.e].isSet()) this.problems.push(`${id} woke from events[${op.e}].wait() but the event is not set`);
        return mix(h, this.#undef(v));
      }
      case "waitT": { const v: unknown = yield this.events[op.e].wait(op.ms); this.#resumed(id); return mix(h, this.#undef(v)); }
      case "set": this.events[op.e].set(); return h;
      case "sem": {
        yield* this.#holding(id, op);
        return mix(h, 0);
      }
      case "tSem": {
        // Either outcome is fine; the permit must come back either way.
        const holder = this.#private((pid) => this.#holding(pid, op));
        const r: unknown = yield tinyio.timeout(holder.coro, op.ms);
        this.#resumed(id);
        if (!Array.isArray(r) || r.length !== 2 || (r[1] !== true && r[1] !== false)) this.problems.push(`${id}: timeout(holder) gave ${JSON.stringify(r)}`);
        return mix(h, 0);
      }
      case "tFast": {
        const r: unknown = yield tinyio.timeout(this.#private(function* (pid) {
          yield* self.#steps(pid, op.steps);
          return op.value;
        }).coro, 5000);
        this.#resumed(id);
        const ok = Array.isArray(r) && r.length === 2 && r[1] === true;
        if (!ok) this.problems.push(`${id}: timeout(fast, 5000) gave ${JSON.stringify(r)}`);
        return mix(h, ok ? r[0] : BAD);
      }
      case "tStuck": {
        const stuck = this.#private(function* () {
          yield new tinyio.Event().wait();
        });
        const r: unknown = yield tinyio.timeout(stuck.coro, op.ms);
        this.#resumed(id);
        const ok = Array.isArray(r) && r.length === 2 && r[0] === undefined && r[1] === false;
        if (!ok) this.problems.push(`${id}: timeout(stuck, ${op.ms}) gave ${JSON.stringify(r)}`);
        // A timeout returns once the coroutine it timed out has finished, cleanup included.
        if (this.finallies.get(stuck.id) !== 1) this.problems.push(`${id}: timeout returned before ${stuck.id} ran its finally`);
        return mix(h, ok ? 0 : BAD);
      }
      case "tRace": {
        const racer = this.#private(function* (pid) {
          const v: number = yield* self.#waitOn(pid, [op.j], function* () { return yield self.coro(op.j); });
          self.#resumed(pid);
          return v;
        });
        const r: unknown = yield tinyio.timeout(racer.coro, op.ms);
        this.#resumed(id);
        this.races.push({ j: op.j, result: r });
        if (this.finallies.get(racer.id) !== 1) this.problems.push(`${id}: timeout returned before ${racer.id} ran its finally`);
        return mix(h, 0);
      }
      case "asCompleted": {
        const nexts: Iterable<Coro<number>> = yield tinyio.asCompleted(op.js.map((j) => this.coro(j)));
        this.#resumed(id);
        let sum = 0;
        let count = 0;
        for (const next of nexts) {
          sum = (sum + (yield next)) | 0;
          this.#resumed(id);
          count++;
        }
        return mix(mix(h, sum), count);
      }
      case "thread": {
        try {
          const v: number = yield tinyio.runInThread<[SharedArrayBuffer, number, number], number | Promise<number>>(op.async ? workAsync : work, this.beats.buffer as SharedArrayBuffer, op.slot, op.ms);
          this.#resumed(id);
          return mix(h, v);
        } catch (error) {
          // The CancelledError comes only once the thread has stopped: it
          // never started, or it finished, or (async) it saw its signal abort
          // and cleaned up, or (long sync work) its worker was terminated. A
          // short sync call (8 ms at most) finishes well within the grace period.
          const cell = (at: number) => Atomics.load(this.beats, at + op.slot);
          this.beatsAtCancel.push({ slot: op.slot, beats: cell(0) });
          const settled = cell(ENTERED) === 0 || cell(FINISHED) === 1 || (op.async ? cell(CLEANED) === 1 : op.ms > 8);
          if (!settled) this.problems.push(`${id}: got ${describeError(error)} while its thread (${op.async ? "async" : "sync"}, ${op.ms} ms) was still at work: entered ${cell(ENTERED)}, finished ${cell(FINISHED)}, cleaned ${cell(CLEANED)}`);
          throw error;
        }
      }
      case "helper": { const v = yield* this.#helper(id, op.n); return mix(h, v); }
      case "isolate": {
        // A nested loop: a private coroutine gathered with a sibling that
        // waits forever (unless the private fails, which cancels it there).
        const own = new Error(`isolated failure in ${id}`);
        const inner = () => `i${this.#inner++}`;
        const forever = this.#tracked(inner(), function* () {
          yield new tinyio.Event().wait(op.fails ? undefined : 0);
        });
        const body = this.#tracked(inner(), function* (): Coro<number> {
          yield* self.#steps(id, op.steps);
          if (op.fails) throw own;
          return op.value;
        });
        const r: unknown = yield tinyio.isolate((function* (): Coro<number> {
          const [, v]: [void, number] = yield [forever, body];
          return v;
        })());
        this.#resumed(id);
        const ok = Array.isArray(r) && r.length === 2 && (op.fails ? r[0] === own && r[1] === false : r[0] === op.value && r[1] === true);
        if (!ok) this.problems.push(`${id}: isolate gave ${JSON.stringify(r, (_, v) => (v instanceof Error ? describeError(v) : v))}`);
        return mix(h, ok ? (op.fails ? 1 : op.value) : BAD);
      }
      case "promise": {
        if (this.driver === "run") {
          yield tinyio.sleep(op.ms);
          this.#resumed(id);
          return mix(h, op.ms);
        }
        let called = false;
        let aborted = false;
        let settled = false;
        try {
          const waitFor = () => tinyio.fromPromise((signal) => new Promise<number>((resolve, reject) => {
            called = true;
            const timer = setTimeout(() => ((settled = true), resolve(op.ms)), op.ms);
            signal.addEventListener("abort", () => (clearTimeout(timer), (aborted = true), reject(signal.reason)));
          }));
          const v: number = yield OPEN_BUGS.fromPromiseGap ? (function* () { return yield* waitFor(); })() : waitFor();
          this.#resumed(id);
          return mix(h, v);
        } catch (error) {
          // Cancelled while waiting: the promise's signal aborted first.
          if (called && !settled && !aborted) this.problems.push(`${id}: got ${describeError(error)} while its fromPromise signal had not aborted`);
          throw error;
        }
      }
      case "throw": this.threw = true; this.crashed = true; throw this.error;
      case "orphan": { yield this.orphan.wait(); this.#resumed(id); this.problems.push(`${id} woke from an event nobody sets`); return h; }
      case "cycle": { yield this.coro(op.j); this.#resumed(id); this.problems.push(`${id} yielded n${op.j}, which waits on it, and was resumed`); return h; }
    }
  }
}

// The checks
// ----------

// What the run should have thrown, given the failure it had.
function checkFailure(x: Execution, thrown: unknown, isOriginal: (e: unknown) => boolean, what: string): void {
  const group = x.program.exceptionGroup;
  if (group === false || (group === undefined && x.cleanupErrors.length === 0)) {
    assert.ok(isOriginal(thrown), `expected ${what} alone, got ${describeError(thrown)}`);
    return;
  }
  assert.ok(thrown instanceof AggregateError, `expected an AggregateError, got ${describeError(thrown)}`);
  const [first, ...rest] = thrown.errors;
  assert.ok(isOriginal(first), `expected ${what} first in the AggregateError, got ${describeError(first)}`);
  if (group === undefined) {
    // Only the errors other than CancelledError, in the order raised.
    assert.equal(rest.length, x.cleanupErrors.length, `AggregateError has ${rest.map(describeError)}`);
    rest.forEach((e, k) => assert.equal(e, x.cleanupErrors[k], `AggregateError item ${k + 1}`));
  } else {
    // Every error of a cancelled coroutine: CancelledErrors and our cleanup errors.
    const cleanups = rest.filter((e) => !(e instanceof tinyio.CancelledError));
    assert.deepEqual(cleanups.map(describeError), x.cleanupErrors.map(describeError));
    cleanups.forEach((e, k) => assert.equal(e, x.cleanupErrors[k]));
  }
}

function describeError(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

// Checks one execution against the program's mode and the model.
function check(x: Execution, outcome: { value: unknown } | { error: unknown }, driver: "run" | "toPromise", abortReason?: unknown): void {
  const { program } = x;
  assert.deepEqual(x.problems, [], "problems seen while running");
  // Every coroutine that started ran its finally exactly once, and started once.
  for (const [id, n] of x.started) {
    assert.equal(n, 1, `${id} started ${n} times`);
    assert.equal(x.finallies.get(id) ?? 0, 1, `${id} ran its finally ${x.finallies.get(id) ?? 0} times`); // (a swallower that yielded is closed with return(): its finally runs too)
    assert.ok((x.completed.get(id) ?? 0) + (x.caught.has(id) ? 1 : 0) === 1, `${id} both completed and failed, or neither`);
  }
  // Nothing is left holding a semaphore, or waiting on an event.
  assert.deepEqual(x.holders, program.sems.map(() => 0), "semaphore holders left");
  for (const [e, event] of [...x.events, x.orphan].entries()) assert.equal(event.waits.size, 0, `events[${e}] still has waits registered`);
  for (const { j, result } of x.races) {
    const values = model(program);
    const ok = (Array.isArray(result) && result[1] === true && result[0] === values[j]) || (Array.isArray(result) && result[0] === undefined && result[1] === false);
    if (program.mode === "normal" || (Array.isArray(result) && result[1] === true)) assert.ok(ok, `timeout(race n${j}) gave ${JSON.stringify(result)}, model value ${values[j]}`);
  }
  if (program.mode === "normal") {
    assert.ok("value" in outcome, `expected a value, got ${describeError((outcome as { error: unknown }).error)}`);
    const values = model(program);
    assert.equal(outcome.value, values[0], "run returned what the model says");
    const expected = [...reachable(program.nodes)].sort((a, b) => a - b).map((i) => `n${i}`);
    const started = [...x.started.keys()].filter((id) => id.startsWith("n")).sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)));
    assert.deepEqual(started, expected, "the nodes that ran are the reachable ones");
    // Each completed, except private children that timed out.
    for (const id of x.started.keys()) if (!x.caught.has(id)) assert.equal(x.completed.get(id), 1, `${id} did not complete`);
    // (Isolated coroutines may fail or be cancelled inside their nested loop.)
    for (const [id, e] of x.caught) assert.ok((e instanceof tinyio.TimeoutError && id.startsWith("p")) || id.startsWith("i"), `${id} caught ${describeError(e)}`);
    return;
  }
  assert.ok("error" in outcome, `expected ${driver} to fail (${program.mode}), but it returned ${String((outcome as { value: unknown }).value)}`);
  const thrown = outcome.error;
  if (program.mode === "throw") {
    assert.ok(x.threw, "the throw happened");
    checkFailure(x, thrown, (e) => e === x.error, "the generated error");
  } else if (program.mode === "cycle") {
    checkFailure(x, thrown, (e) => e instanceof Error && e.message.includes("Cycle detected"), "a Cycle detected error");
  } else if (driver === "run") {
    checkFailure(x, thrown, (e) => e instanceof Error && e.message.includes("Deadlock"), "a Deadlock error");
  } else {
    checkFailure(x, thrown, (e) => e === abortReason, "the signal's reason");
  }
  // Whoever did not complete failed with the original error (the thrower),
  // a CancelledError, a TimeoutError (a private child timed out), or the
  // cycle error (the node that closed the cycle).
  for (const [id, e] of x.caught) {
    const fine = e === x.error || id.startsWith("i") || e instanceof tinyio.CancelledError || e instanceof tinyio.TimeoutError || e instanceof CleanupError || (e instanceof Error && e.message.includes("Cycle detected"));
    assert.ok(fine, `${id} failed with ${describeError(e)}`);
  }
}

// After a run has ended, nothing of it may still run: a short wait later, its
// log has not grown and its threads' heartbeats have stopped. We check all the
// runs of a property at once, after one short wait.
type Snapshot = { x: Execution; log: number; beats: number[]; label: string };
const snapshot = (x: Execution, label: string): Snapshot => ({ x, log: x.log, beats: [...x.beats], label });

async function checkQuiet(snapshots: Snapshot[]): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 60));
  for (const { x, log, beats, label } of snapshots) {
    assert.equal(x.log, log, `${label}: coroutines resumed after the run ended\n${JSON.stringify(x.program)}`);
    // (A terminated thread may still finish the one operation it was in.)
    beats.slice(0, 4).forEach((b, slot) => assert.ok(x.beats[slot] - b <= 1, `${label}: thread ${slot} still ticking after the run ended\n${JSON.stringify(x.program)}`));
    for (const { slot, beats } of x.beatsAtCancel) assert.ok(x.beats[slot] - beats <= 1, `${label}: thread ${slot} kept ticking after its caller was cancelled\n${JSON.stringify(x.program)}`);
  }
}

// Every sleep waits on one module-wide event that nobody sets (an internal
// detail, reached through a sleep's wait: if that changes, we check nothing).
// Whatever a synchronous run registered there must be gone when it ends,
// or each run would leave waits behind for good.
const sleepsEvent = (tinyio.sleep(0) as unknown as { event?: tinyio.Event }).event;
function checkSleepsEvent(after: string): void {
  if (sleepsEvent !== undefined) assert.equal(sleepsEvent.waits.size, 0, `sleep waits left registered after ${after}`);
}

// A semaphore must have all its permits back: take them all at once.
function checkPermits(x: Execution): void {
  x.program.sems.forEach((cap, s) => {
    function* takeAll(): Coro<void> {
      const permits: tinyio.Release[] = yield Array.from({ length: cap }, () => x.sems[s].acquire());
      for (const permit of permits) permit.release();
    }
    assert.doesNotThrow(() => new tinyio.Loop().run(takeAll()), `semaphore ${s} lost permits`);
  });
}

// The hard time limit. A synchronous `run` that hangs cannot be interrupted
// from JavaScript, so a watchdog thread watches a counter that each case bumps;
// if a case takes longer than the limit, it prints the program and kills the
// process (the test runner then reports the file as failed, with the output).
const HARD_LIMIT_MS = Number(process.env.TINYIO_HARD_LIMIT_MS ?? 30_000);
const watch = new Int32Array(new SharedArrayBuffer(8));
const watchText = new Uint8Array(new SharedArrayBuffer(64 * 1024));
const watchdog = new Worker(
  `const { workerData: { watch, text, limit } } = require("node:worker_threads");
  let last = -1, since = Date.now();
  setInterval(() => {
    const n = Atomics.load(watch, 0);
    if (n !== last || Atomics.load(watch, 1) === 0) { last = n; since = Date.now(); return; }
    if (Date.now() - since < limit) return;
    const end = text.indexOf(0);
    require("node:fs").writeSync(2, "\\nproperties.test.ts: a case ran for more than " + limit + " ms; the loop hangs. Program:\\n" + Buffer.from(text.subarray(0, end < 0 ? text.length : end)).toString() + "\\n");
    process.kill(process.pid, "SIGKILL");
  }, 500);`,
  { eval: true, workerData: { watch, text: watchText, limit: HARD_LIMIT_MS } },
);
watchdog.unref();

function watching<T>(label: string, fn: () => T): T {
  const bytes = new TextEncoder().encode(label.slice(0, 60_000));
  watchText.fill(0);
  watchText.set(bytes);
  Atomics.add(watch, 0, 1);
  Atomics.store(watch, 1, 1);
  try {
    return fn();
  } finally {
    Atomics.store(watch, 1, 0);
  }
}

// A soft limit, well below the hard one: a case that takes this long is a
// failure with a shrinkable counterexample (the slowest legal program takes
// well under a second).
const SOFT_LIMIT_MS = 8_000;

let cases = 0;

// The loop's warnings (for coroutines that swallow their CancelledError),
// intercepted so that the output stays clean, and counted.
const warned: string[] = [];
function interceptWarnings(): () => void {
  const original = process.emitWarning;
  process.emitWarning = ((warning: string | Error) => void warned.push(String(warning))) as typeof process.emitWarning;
  return () => void (process.emitWarning = original);
}
const stats = new Map<string, number>();
function tally(program: Program): void {
  cases++;
  const keys = [program.mode, ...(program.threads > 0 ? ["with threads"] : []), ...(program.nodes.some((n) => n.badCleanup) ? ["with a failing cleanup"] : []), ...(program.nodes.some((n) => n.swallow !== "no") ? ["with a swallower"] : [])];
  for (const key of keys) stats.set(key, (stats.get(key) ?? 0) + 1);
}
const statsLine = () => [...stats].map(([k, n]) => `${k} ${n}`).join(", ");

function runSync(program: Program, snapshots: Snapshot[]): void {
  tally(program);
  const x = new Execution(program, "run");
  const label = `run ${JSON.stringify(program)}`;
  const warnedBefore = warned.length;
  const start = performance.now();
  let outcome: { value: unknown } | { error: unknown };
  try {
    outcome = { value: watching(label, () => new tinyio.Loop().run(x.root(), { exceptionGroup: program.exceptionGroup })) };
  } catch (error) {
    outcome = { error };
  }
  const ms = performance.now() - start;
  assert.ok(ms < SOFT_LIMIT_MS, `the run took ${ms.toFixed(0)} ms`);
  assert.equal(warned.length - warnedBefore, x.swallowed, `warnings: ${warned.slice(warnedBefore).join("; ")}`);
  check(x, outcome, "run");
  checkSleepsEvent("the run");
  checkPermits(x);
  snapshots.push(snapshot(x, label));
}

// The programs of a batch share one AbortSignal (as the runs of a server
// share a shutdown signal), aborted once every program not in deadlock mode
// has settled, so that it ends the deadlocked ones only.
async function runBatch(programs: Program[], snapshots: Snapshot[]): Promise<void> {
  const controller = new AbortController();
  const reason = new Error("aborted by the test (deadlock mode)");
  const own = OPEN_BUGS.sharedSignal ? programs.map(() => new AbortController()) : programs.map(() => controller);
  const runs = programs.map((program, k) => runAsync(program, snapshots, own[k], reason).catch((error: unknown) => explained(program, () => { throw error; })));
  let timer: NodeJS.Timeout | undefined;
  if (programs.some((p) => p.mode === "deadlock")) {
    void Promise.allSettled(runs.filter((_, k) => programs[k].mode !== "deadlock")).then(() => {
      timer = setTimeout(() => {
        controller.abort(reason);
        own.forEach((c) => c.abort(reason));
      }, 5);
    });
  }
  try {
    await Promise.all(runs);
  } finally {
    clearTimeout(timer);
  }
}

async function runAsync(program: Program, snapshots: Snapshot[], controller: AbortController, reason: unknown): Promise<void> {
  tally(program);
  const x = new Execution(program, "toPromise");
  const label = `toPromise ${JSON.stringify(program)}`;
  let limit: NodeJS.Timeout | undefined;
  const hung = new Promise<"hung">((resolve) => (limit = setTimeout(() => resolve("hung"), SOFT_LIMIT_MS)));
  let outcome: { value: unknown } | { error: unknown };
  try {
    const value = await Promise.race([tinyio.toPromise(x.root(), { exceptionGroup: program.exceptionGroup, signal: controller.signal }), hung]);
    outcome = { value };
  } catch (error) {
    outcome = { error };
  } finally {
    clearTimeout(limit);
    x.timers.forEach(clearTimeout);
  }
  if ("value" in outcome && outcome.value === "hung") {
    controller.abort(new Error("the test gave up"));
    assert.fail(`toPromise did not settle within ${SOFT_LIMIT_MS} ms`);
  }
  check(x, outcome, "toPromise", reason);
  checkPermits(x);
  snapshots.push(snapshot(x, label));
}

// Reports a failing case with the normalized program, which is what a repro needs.
function explained<T>(program: Program, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if (error instanceof Error) error.message += `\nprogram: ${JSON.stringify(program)}`;
    throw error;
  }
}

const programArb = rawProgramArb.map(normalize);

function seeds(): { seed: number; path?: string; label: string }[] {
  if (process.env.TINYIO_SEED !== undefined) return [{ seed: FRESH_SEED, path: PATH, label: "replayed" }];
  return [
    { seed: FIXED_SEED, label: "fixed" },
    { seed: FRESH_SEED, label: "fresh" },
  ];
}

describe("Generated programs match the model", () => {
  it("under Loop.run: the model's value, each coroutine once, clean cancellation, Deadlock and Cycle detected when due", async (t) => {
    for (const { seed, path, label } of seeds()) {
      t.diagnostic(`Loop.run: ${label} seed ${seed}, ${RUNS} cases (replay: TINYIO_SEED=${seed})`);
      const snapshots: Snapshot[] = [];
      const before = cases;
      const restore = interceptWarnings();
      try {
        fc.assert(
          fc.property(programArb, (program) => explained(program, () => runSync(program, snapshots))),
          { seed, path, numRuns: RUNS },
        );
      } finally {
        restore();
      }
      await checkQuiet(snapshots);
      t.diagnostic(`Loop.run: ${cases - before} executions (shrinking included); so far: ${statsLine()}`);
    }
  });

  it("under toPromise, up to three programs at once: the same, with an AbortSignal ending deadlocks", async (t) => {
    for (const { seed, path, label } of seeds()) {
      t.diagnostic(`toPromise: ${label} seed ${seed}, ${Math.ceil(RUNS / 2)} batches (replay: TINYIO_SEED=${seed})`);
      const snapshots: Snapshot[] = [];
      const before = cases;
      const restore = interceptWarnings();
      try {
        await fc.assert(
          fc.asyncProperty(fc.array(programArb, { minLength: 1, maxLength: 3 }), (programs) => runBatch(programs, snapshots)),
          { seed, path, numRuns: Math.ceil(RUNS / 2) },
        );
      } finally {
        restore();
      }
      await checkQuiet(snapshots);
      t.diagnostic(`toPromise: ${cases - before} executions (shrinking included); so far: ${statsLine()}`);
    }
  });
});

// Leaks
// -----
//
// One loop, many runs: the loop keeps no bookkeeping between runs, and what
// the user dropped (coroutines, their results, our records) is collected.
// `gc` comes from V8 itself, as in tinyio.test.ts.

// (Bun has its own; V8 runtimes, Node and Deno, take the flag at run time.)
function collector(): () => void {
  const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
  if (bun !== undefined) return () => bun.gc(true);
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
}

// How this runtime runs a TypeScript script in a child process.
function scriptCommand(script: string): string[] {
  const versions = process.versions as { bun?: string; deno?: string };
  if (versions.bun !== undefined) return [script];
  if (versions.deno !== undefined) return ["run", "-A", script];
  return ["--import", "tsx", script];
}

// Collects until every WeakRef is empty (or gives up); returns those still alive.
async function collect(refs: WeakRef<object>[]): Promise<number> {
  const gc = collector();
  for (let i = 0; i < 10 && refs.some((ref) => ref.deref() !== undefined); i++) {
    // (A WeakRef keeps its target alive until the end of the current job.)
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
  return refs.filter((ref) => ref.deref() !== undefined).length;
}

function assertLoopIsEmpty(loop: tinyio.Loop, after: string): void {
  assert.equal(loop.live.size, 0, `tasks left after ${after}`);
  assert.equal(loop.queue.length, 0, `queue not empty after ${after}`);
  assert.equal(loop.timers.length, 0, `timers left after ${after}`);
  assert.equal(loop.crash, null, `crash record left after ${after}`);
}

describe("Leaks", () => {
  let restore = () => {};
  before(() => (restore = interceptWarnings()));
  after(() => restore());

  it("keeps nothing on a loop run with hundreds of generated programs: empty bookkeeping, dropped coroutines collected", async () => {
    const loop = new tinyio.Loop();
    const refs: WeakRef<object>[] = [];
    const programs = fc.sample(programArb.filter((p) => p.threads === 0), { seed: FIXED_SEED, numRuns: 300 });
    for (const program of programs) {
      (() => {
        const x = new Execution(program, "run");
        try {
          loop.run(x.root(), { exceptionGroup: program.exceptionGroup });
        } catch {}
        assertLoopIsEmpty(loop, JSON.stringify(program));
        checkSleepsEvent(JSON.stringify(program));
        refs.push(new WeakRef(x), ...x.coros.filter((c) => c !== undefined).map((c) => new WeakRef(c)));
      })();
    }
    const alive = await collect(refs);
    assert.equal(alive, 0, `${alive} of ${refs.length} dropped objects are still alive`);
    // And the loop still works.
    function* answer(): Coro<number> {
      yield tinyio.sleep(1);
      return 42;
    }
    assert.equal(loop.run(answer()), 42);
  });

  it("keeps the heap flat over a thousand runs on one loop", async (t) => {
    const gc = collector();
    const loop = new tinyio.Loop();
    const programs = fc.sample(programArb.filter((p) => p.threads === 0 && p.nodes.every((n) => n.ops.every((op) => !("ms" in op) || op.ms < 4))), { seed: FIXED_SEED + 1, numRuns: 250 });
    const runAll = () => {
      for (const program of programs) {
        try {
          loop.run(new Execution(program, "run").root(), { exceptionGroup: program.exceptionGroup });
        } catch {}
      }
    };
    const heap = async () => {
      for (let i = 0; i < 3; i++) (await new Promise((resolve) => setImmediate(resolve)), gc());
      return process.memoryUsage().heapUsed;
    };
    runAll(); // warm up
    const before = await heap();
    for (let i = 0; i < 4; i++) runAll();
    const growth = (await heap()) - before;
    t.diagnostic(`heap growth over ${4 * programs.length} runs: ${(growth / 1e3).toFixed(0)} kB`);
    // 1,000 runs. We see a few hundred kB of noise; a loop that kept each
    // run's coroutines (a Map for its results instead of a WeakMap) grows
    // by about 10 MB here.
    assert.ok(growth < 2_500_000, `the heap grew by ${(growth / 1e6).toFixed(1)} MB over ${4 * programs.length} runs`);
  });

  it("leaves no busy or referenced worker behind: a script that cancels threads mid-flight exits at once", async () => {
    const script = `
      import * as tinyio from ${JSON.stringify(new URL("./tinyio.ts", import.meta.url).href)};
      const spin = (ms) => { const end = Date.now() + ms; while (Date.now() < end); return ms; };
      async function sleepy(ms) {
        await new Promise((resolve, reject) => {
          const timer = setTimeout(resolve, ms);
          this.signal.addEventListener("abort", () => (clearTimeout(timer), reject(this.signal.reason)));
        });
        return ms;
      }
      function* main() {
        // Finished calls, calls timed out mid-flight (sync: terminated after the
        // grace period; async: settle on abort), and a crash while calls run.
        yield [tinyio.runInThread(spin, 5), tinyio.runInThread(sleepy, 5)];
        yield [tinyio.timeout(tinyio.runInThread(spin, 2000), 20), tinyio.timeout(tinyio.runInThread(sleepy, 2000), 20)];
        function* boom() { yield tinyio.sleep(20); throw new Error("boom"); }
        yield [tinyio.runInThread(spin, 2000), tinyio.runInThread(sleepy, 2000), boom()];
      }
      for (let i = 0; i < 3; i++) {
        try { new tinyio.Loop().run(main()); } catch (e) { if (e.message !== "boom") throw e; }
      }
      try { await tinyio.toPromise(main()); } catch (e) { if (e.message !== "boom") throw e; }
      // Last, calls that finish: their workers stay idle in the pools, unreferenced.
      new tinyio.Loop().run((function* () { yield [tinyio.runInThread(spin, 1), new tinyio.ThreadPool(1).runInThread(spin, 1)]; })());
      process.stdout.write("done " + performance.now() + "\\n");
    `;
    const dir = mkdtempSync(join(tmpdir(), "tinyio-leaks-"));
    try {
      writeFileSync(join(dir, "script.mjs"), script);
      const start = performance.now();
      const { stdout, stderr, code } = await new Promise<{ stdout: string; stderr: string; code: number | null }>((resolve, reject) => {
        const child = spawn(process.execPath, scriptCommand(join(dir, "script.mjs")), { cwd: here });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (chunk) => (stdout += chunk));
        child.stderr.on("data", (chunk) => (stderr += chunk));
        const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
        child.on("error", reject);
        child.on("close", (code) => (clearTimeout(killer), resolve({ stdout, stderr, code })));
      });
      const total = performance.now() - start;
      assert.equal(code, 0, `the script failed:\n${stderr}`);
      const done = Number(/done ([\d.]+)/.exec(stdout)?.[1]);
      assert.ok(done > 0, `the script did not finish:\n${stdout}\n${stderr}`);
      // From its last line to its exit: nothing kept it alive. (The child's
      // clock starts at its own launch, a little after ours.)
      assert.ok(total - done < 2_000, `the script took ${(total - done).toFixed(0)} ms to exit after its last line`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// Regressions
// -----------
//
// Minimal repros of what the properties found, shrunk by hand from
// fast-check's counterexamples.

describe("Regressions found by the properties", () => {
  it("gives back a permit taken by `yield* sem.acquire()` when the loop crashes before the waiter resumed", () => {
    // Shrunk from: {"mode":"cycle","nodes":[{"ops":[{"k":"bg","js":[1]},{"k":"setters"},{"k":"cycle","j":0}]},{"ops":[{"k":"bg","js":[2]}]},{"ops":[{"k":"sem","s":0,"inner":[]},{"k":"bg","js":[3]}]},{"ops":[]}],"sems":[1]}
    const sem = new tinyio.Semaphore(1);
    function* holder(): Coro<void> {
      const permit: tinyio.Release = yield* sem.acquire(); // inline: the cancellation reaches the acquire itself
      try {
        yield;
      } finally {
        permit.release();
      }
    }
    function* fails(): Coro<void> {
      yield; // the acquire coroutine runs now, and finishes; `holder` is queued
      throw new Error("boom"); // `holder` gets its CancelledError instead of the permit
    }
    function* main(): Coro<void> {
      yield [holder(), fails()];
    }
    assert.throws(() => new tinyio.Loop().run(main()), /boom/);
    function* again(): Coro<string> {
      const permit: tinyio.Release = yield sem.acquire();
      permit.release();
      return "the permit is back";
    }
    assert.equal(new tinyio.Loop().run(again()), "the permit is back");
  });

  it("gives back a permit taken by `yield* sem.acquire()` when a timeout interrupts the waiter (no crash needed)", () => {
    // Shrunk from: {"mode":"normal","nodes":[{"ops":[{"k":"bg","js":[1]},{"k":"tSem","s":0,"inner":[],"inline":false,"ms":0}]},{"ops":[]}],"sems":[1]}
    const sem = new tinyio.Semaphore(1);
    function* holder(ms: number): Coro<void> {
      const permit: tinyio.Release = yield* sem.acquire();
      try {
        yield tinyio.sleep(ms);
      } finally {
        permit.release();
      }
    }
    function* main(): Coro<unknown> {
      yield new Set([holder(50)]); // holds the only permit for 50 ms
      yield;
      // Times out while queued: the TimeoutError reaches the acquire inline,
      // which leaves the queue.
      const first = yield tinyio.timeout(holder(0), 10);
      const second = yield tinyio.timeout(sem.acquire(), 1_000);
      if (second[1]) second[0].release();
      return [first, second[1]];
    }
    assert.deepEqual(new tinyio.Loop().run(main()), [[undefined, false], true]);
  });

  it("wakes every toPromise run sharing an AbortSignal when it aborts, after another run with it has ended", async () => {
    // Shrunk from: [[{"mode":"deadlock","nodes":[{"ops":[{"k":"orphan"}]}]},{"mode":"normal","nodes":[{"ops":[]}]}]]
    const controller = new AbortController();
    function* waits(): Coro<void> {
      yield new tinyio.Event().wait(); // until aborted
    }
    function* quick(): Coro<string> {
      yield;
      return "done";
    }
    const waiting = tinyio.toPromise(waits(), { signal: controller.signal });
    assert.equal(await tinyio.toPromise(quick(), { signal: controller.signal }), "done"); // ends first
    const reason = new Error("shutdown");
    controller.abort(reason);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise((resolve) => (timer = setTimeout(resolve, 2_000, "still waiting after 2 s")));
    try {
      assert.equal(await Promise.race([waiting.catch((error: unknown) => error), late]), reason);
    } finally {
      clearTimeout(timer);
    }
  });

  it("starts no work behind `fromPromise(fn)` that outlives the run when it is cancelled before its first step", async () => {
    // Shrunk from: [{"mode":"throw","nodes":[{"ops":[{"k":"bg","js":[1]},{"k":"promise","ms":0}]},{"ops":[{"k":"bg","js":[2]},{"k":"throw"}]},{"ops":[],"badCleanup":true}]}]
    let signal: AbortSignal | undefined;
    let timer: NodeJS.Timeout | undefined;
    function* fails(): Coro<never> {
      throw new Error("boom");
    }
    function* main(): Coro<void> {
      // `fails` runs first and crashes the loop, so the fromPromise coroutine
      // is cancelled unstarted: its function is never called.
      yield [fails(), tinyio.fromPromise((s) => new Promise<void>((resolve) => ((signal = s), (timer = setTimeout(resolve, 5_000)))))];
    }
    try {
      await assert.rejects(tinyio.toPromise(main()), /boom/);
      assert.ok(signal === undefined || signal.aborted, "the work behind the promise runs on");
    } finally {
      clearTimeout(timer);
    }
  });
});
