/**
 * # tinyio: a dead-simple event loop, in one file you can read
 *
 * Today we build an event loop together. Not a toy: the real thing, with
 * structured cancellation, timers, threads and a bridge to promises, in one
 * file that you can read from top to bottom and copy into your project.
 *
 * Coroutines are plain generator functions. A coroutine `yield`s what it
 * waits for, and the loop resumes it with the answer:
 *
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 *
 * function* slowAddOne(x: number): tinyio.Coro<number> {
 *   yield tinyio.sleep(100);
 *   return x + 1;
 * }
 *
 * function* main(): tinyio.Coro<number[]> {
 *   const [four, five] = yield [slowAddOne(3), slowAddOne(4)];
 *   return [four, five];
 * }
 *
 * console.log(new tinyio.Loop().run(main())); // [4, 5], after 100 ms
 * ```
 *
 * If any coroutine throws, every other coroutine gets a {@link CancelledError}
 * at its `yield` (so its `finally` blocks run), work in threads is stopped,
 * and the original error comes out of `run`.
 *
 * The whole public API:
 * - the loop: {@link Loop} (`run`), {@link Coro}, {@link CancelledError};
 * - time: {@link sleep}, {@link timeout}, {@link TimeoutError};
 * - synchronisation: {@link Event}, {@link Semaphore}, {@link Lock},
 *   {@link Barrier}, {@link asCompleted}, {@link all};
 * - threads: {@link runInThread}, {@link ThreadPool};
 * - promises: {@link toPromise}, {@link fromPromise};
 * - isolation: {@link isolate}, {@link copy}.
 *
 * Units are milliseconds everywhere, as with `setTimeout`.
 *
 * @module
 */

import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { availableParallelism } from "node:os";

// The map before the territory
// ----------------------------
//
// The whole loop rests on one idea. When a coroutine yields, the loop notes
// on its record (its `Task`) "resume me once N things have finished", and
// hands the task to each of those things. Each one counts the task down by
// one when it finishes; at zero, the task joins the back of the run queue.
// A thing that can finish is either another coroutine or a `Wait` on an
// `Event` (which may also time out). That is all: sleeping, threads,
// promises and nested loops are built out of those two, so one mechanism
// wakes everything. (The Python original calls the counter `_WaitingFor`.)
//
// Here is one step. `main` is first in the queue; it yields `[a, b]`:
//
//     queue: [main, c]            queue: [c, a, b]
//     main:  runnable      ==>    main:  waits on [a, b], count 2
//                                 a.waiters: [main]   b.waiters: [main]
//                                 ^^^^^^^^^ whom `a` counts down when it ends
//
// `a` and `b` were new, so the loop started them (at the back of the queue).
// When `a` returns, main's count drops to 1; when `b` returns, to 0, and
// `main` is queued again, to be resumed with `[resultOfA, resultOfB]`.

// Vocabulary
// ----------

/**
 * A coroutine: any generator object. `R` is what it returns; what it yields
 * is what it waits for (see {@link Yieldable}); what it is resumed with is
 * untyped (use `yield*` or {@link all} for typed results).
 */
export type Coro<R = any> = Generator<Yieldable, R, any>;

/**
 * What a coroutine may yield: nothing (`yield;`, to let others run), a
 * coroutine (wait for it), an array of coroutines (wait for all of them), or
 * a `Set` of coroutines (start them in the background). `event.wait()`,
 * `sleep(ms)` and the other waits of this API are coroutines too.
 */
export type Yieldable = void | undefined | Coro | readonly Coro[] | Set<Coro>;

/** Options of {@link Loop.run}, {@link toPromise} and {@link isolate}. */
export type RunOptions = {
  /**
   * What to throw when a coroutine fails. Unset: the original error, or an
   * `AggregateError` (original first) if other coroutines raised something
   * other than `CancelledError` while being cancelled. `false`: always the
   * original error alone. `true`: always an `AggregateError` holding the
   * original error, then every error raised during cancellation,
   * `CancelledError`s included.
   */
  exceptionGroup?: boolean;
};

/**
 * Thrown into every unfinished coroutine at its `yield` when another
 * coroutine of the loop fails. Let it propagate once you have cleaned up.
 */
export class CancelledError extends Error {}
CancelledError.prototype.name = "CancelledError";

/** Thrown into a coroutine at its `yield` when its {@link timeout} expires. */
export class TimeoutError extends Error {}
TimeoutError.prototype.name = "TimeoutError";

// The loop's bookkeeping never holds an error as "no error": we use this
// marker instead of `undefined`, since JavaScript can `throw undefined`.
const NONE: unique symbol = Symbol("none");

// The wake word
// -------------
//
// A loop with nothing to run must sleep until something can wake it: the
// soonest timer, a worker thread's answer, or (when the loop runs beside
// Node's own event loop) an `Event.set()` called from a promise callback.
// All of these notify one 32-bit word in shared memory. The loop reads the
// word before it looks for work, and then sleeps with `Atomics.wait` "while
// the word still holds what I read". Anything that changed the word in
// between makes the sleep return at once, so no wake-up is ever lost, and
// nothing polls. Worker threads get the same buffer, so they can wake us.
const wake = new Int32Array(new SharedArrayBuffer(4));

function notify(): void {
  Atomics.add(wake, 0, 1);
  Atomics.notify(wake, 0);
}

// Waiting: tasks, events and timers
// ---------------------------------
//
// Every coroutine the loop runs gets a `Task`. Besides the generator, it
// holds what the coroutine yielded and still waits on, and the counter of
// the map above: how many of those have not finished yet. Everything the
// task waits on holds the task in turn, and counts it down when done.

class Task {
  coro: Coro;
  loop: Loop;
  // What it waits on (a coroutine, an array of them, or a `Wait`), and how
  // many of those are unfinished. A task with a count of 0 is runnable.
  waitingOn: unknown = undefined;
  count = 0;
  // The tasks that wait on this one; made on first use.
  waiters: Task[] | null = null;
  // An error to throw in when it next runs, unless NONE.
  error: unknown = NONE;
  // Set once the task was given its CancelledError.
  cancelled = false;
  constructor(coro: Coro, loop: Loop) {
    this.coro = coro;
    this.loop = loop;
  }

  countDown(): void { if (--this.count === 0) this.loop.wake(this); }
}

// Most places take "what a task waits on" as a list.
const itemsOf = (yielded: unknown): unknown[] => (Array.isArray(yielded) ? yielded : [yielded]);

/**
 * A flag that coroutines can wait for. `set()` wakes every waiter; `clear()`
 * lowers the flag for future waits. Test it with `isSet()`: an `Event` used
 * as a boolean (`if (event)`) is always true, which is never what you mean.
 *
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * const ready = new tinyio.Event();
 * function* waiter() { yield ready.wait(); return "woken"; }
 * function* setter() { yield tinyio.sleep(10); ready.set(); }
 * function* main() { return yield [waiter(), setter()]; }
 * console.log(new tinyio.Loop().run(main())); // ["woken", undefined]
 * ```
 */
export class Event {
  #flag = false;
  /** @internal The waits registered on this event and not yet fired. */
  waits = new Set<Wait>();

  /** Whether the flag is set. */
  isSet(): boolean { return this.#flag; }

  /**
   * Sets the flag and wakes every coroutine waiting on it. Safe to call
   * from outside the loop (a promise callback, a Node timer): the loop is
   * woken through its wake word.
   */
  set(): void {
    if (this.#flag) return;
    this.#flag = true;
    const waits = this.waits;
    this.waits = new Set(); // (so that each `fire` need not delete from the old one)
    for (const wait of waits) wait.fire();
    notify(); // (always: another loop on this thread, under toPromise, may be asleep)
  }

  /**
   * Lowers the flag. Coroutines already woken by `set()` stay woken, even if
   * they have not run yet.
   */
  clear(): void { this.#flag = false; }

  /**
   * A coroutine that finishes when the flag is set, or when `timeoutMs`
   * have passed, whichever is first. Check `isSet()` afterwards to tell
   * which. Yield each `wait()` once; make a new one to wait again.
   * @param timeoutMs optional; a non-negative number of milliseconds.
   */
  wait(timeoutMs?: number): Coro<void> {
    if (timeoutMs !== undefined) checkMs(timeoutMs, "event.wait(timeoutMs)");
    return new Wait(this, timeoutMs ?? Infinity) as unknown as Coro<void>;
  }
}

// Why does a wait that fired stay fired, even if the event is cleared
// before the coroutine runs? Because `set(); clear();` is a pulse that says
// "it happened": a coroutine that was waiting for it must hear of it. And a
// wait that timed out stays timed out, even if the event is set a moment
// later: the coroutine has been told "time is up" and must not be told
// twice. Either way, a `Wait` fires once.

// A `Wait` is what `event.wait(ms)` returns: the one thing besides a
// coroutine that the loop knows how to wait on. It counts its task down
// when its event is set or its deadline passes (timed waits sit in the
// loop's timer heap, below). Its time counts from the `wait(ms)` call.
class Wait {
  event: Event;
  deadline: number;
  task: Task | null = null;
  fired = false;
  used = false;
  // A shielded wait may still be yielded by a cancelled coroutine: it is how
  // a thread call waits for its thread to stop (see "Threads").
  shield = false;
  constructor(event: Event, ms: number) {
    this.event = event;
    this.deadline = ms === Infinity ? Infinity : performance.now() + ms;
  }

  register(task: Task): void {
    this.used = true;
    this.task = task;
    if (this.event.isSet()) return this.fire();
    this.event.waits.add(this);
    if (this.deadline !== Infinity) heapPush(task.loop.timers, this);
  }

  fire(): void {
    if (this.fired) return;
    this.fired = true;
    this.event.waits.delete(this);
    this.task?.countDown();
  }

  // A wait is also a tiny hand-written generator, so that it can go wherever
  // a coroutine can (`yield*`, `loop.run`, a Set): its first `next()` hands
  // the wait itself to the loop, which registers it; the next one returns.
  next(): IteratorResult<Wait, undefined> {
    return this.used ? { value: undefined, done: true } : { value: this, done: false };
  }
  throw(error: unknown): never { throw error; }
  [Symbol.iterator](): this { return this; }
}

// Marks a wait as one that a cancelled coroutine may still yield.
function shielded(wait: Coro<void>): Coro<void> {
  (wait as unknown as Wait).shield = true;
  return wait;
}

// The timer heap: a binary min-heap of waits by deadline, so the soonest is
// always at index 0, and adding or removing one costs O(log n). A wait that
// fired early (its event was set) stays in the heap until it reaches the
// top, where the loop throws it away: cheaper than searching for it.
function heapPush(heap: Wait[], wait: Wait): void {
  let i = heap.push(wait) - 1;
  for (let parent = (i - 1) >> 1; i > 0 && heap[parent].deadline > wait.deadline; parent = (i - 1) >> 1) {
    heap[i] = heap[parent];
    i = parent;
  }
  heap[i] = wait;
}

function heapPop(heap: Wait[]): Wait {
  const top = heap[0];
  const last = heap.pop()!; // moves into the hole at the top, then sinks
  let i = 0;
  for (let child = 1; child < heap.length; i = child, child = 2 * i + 1) {
    if (child + 1 < heap.length && heap[child + 1].deadline < heap[child].deadline) child++;
    if (heap[child].deadline >= last.deadline) break;
    heap[i] = heap[child];
  }
  if (heap.length > 0) heap[i] = last;
  return top;
}

// The loop
// --------
//
// The loop's state is four pieces: `queue`, the tasks ready to run, in order;
// `tasks`, every coroutine started and not yet finished; `timers`, the heap
// above; and `results`, what finished coroutines returned. Results live in a
// `WeakMap`, so a coroutine finished in one `run` can be yielded again in a
// later `run` of the same loop, yet the loop keeps nothing alive that you
// dropped.

// The loop whose coroutines are being stepped right now (`timeout` and
// `isolate` need it), and the wake word's value when threads were last polled.
let current: Loop | null = null;
let polledAt = -1;

// How long a busy loop runs before it lets its driver breathe (see
// `toPromise`: Node's own event loop needs a turn every few milliseconds).
const SLICE_MS = 5;

/**
 * An event loop for tinyio coroutines. A loop may be run many times; what
 * its coroutines returned is remembered (weakly) across runs.
 *
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * function* double(x: number) { yield; return 2 * x; }
 * const loop = new tinyio.Loop();
 * console.log(loop.run(double(21))); // 42
 * ```
 */
export class Loop {
  /** @internal */ queue: Task[] = [];
  /** @internal */ tasks = new Map<Coro, Task>();
  /** @internal */ timers: Wait[] = [];
  /** @internal */ results = new WeakMap<Coro, unknown>();
  /** @internal The error that crashed the run, then the errors raised while cancelling. */
  crash: { error: unknown; errors: unknown[] } | null = null;
  /** @internal The wake word's value when the loop last looked for work. */
  seen = 0;
  /** @internal Whether the thread blocks while we wait (the synchronous `run`). */
  blocking = true;
  /** @internal Set by `isolate` while this nested loop has nothing to do. */
  parked: Event | null = null;
  #running = false;

  /**
   * Runs `coro` and every coroutine it starts until all have finished, and
   * returns what `coro` returned. Blocks the calling thread while it waits
   * (for a timer or a thread), without polling. If a coroutine throws, all
   * others are cancelled and the error is thrown here.
   * @param coro a generator object (call your generator function).
   * @param options see {@link RunOptions}.
   */
  run<R>(coro: Coro<R>, options?: RunOptions): R {
    const runtime = this.start(coro, options, true);
    let step = runtime.next();
    while (!step.done) {
      // Nothing to run, no timer, no thread at work: nothing can wake us.
      const stuck = step.value === Infinity && busy.size === 0;
      if (!stuck && step.value > 0) Atomics.wait(wake, 0, this.seen, step.value);
      step = stuck ? runtime.throw(new Error(DEADLOCK)) : runtime.next();
    }
    return step.value;
  }

  /** @internal Checks the arguments, then hands back the stepping core. */
  start(coro: Coro, options: RunOptions = {}, blocking: boolean): Generator<number, any, void> {
    if (!isCoro(coro)) throw new TypeError(`Loop.run needs a coroutine (a generator object), but got ${describe(coro)}. Did you forget to call the generator function: run(main()) rather than run(main)?`);
    if (this.#running) throw new Error("This loop is currently running: a coroutine cannot run the loop it runs on. To wait for a coroutine, yield it; to run a separate loop inside a coroutine, make a new Loop().");
    this.#running = true;
    this.blocking = blocking;
    return this.#runtime(coro, options);
  }

  // One core, two drivers. The stepping core is itself a generator: it runs
  // coroutines while any is runnable, and when none is, it yields how long
  // it may sleep (Infinity: until woken; 0: "still busy, but take a
  // breath"). Whoever drives it decides how to sleep: `run` blocks the
  // thread with `Atomics.wait`; `toPromise` awaits, so Node's own event loop
  // runs meanwhile; `isolate` waits as a coroutine of an outer loop. A
  // driver reports trouble (a deadlock, an aborted signal) by throwing it in
  // at that `yield`, where it crashes the loop like a coroutine's error.
  *#runtime(root: Coro, options: RunOptions): Generator<number, any, void> {
    const outer = current;
    let sliceStart = performance.now();
    let steps = 0;
    try {
      if (!this.results.has(root)) this.#startTask(root); // (if it has, we return its result)
      while (this.tasks.size > 0) {
        current = this;
        this.#collectWakeUps();
        // Loop invariant: every task in `queue` is also in `tasks`.
        const batch = this.queue;
        this.queue = [];
        for (const task of batch) this.#step(task);
        current = outer;
        if (this.tasks.size === 0) break;
        const ms = this.queue.length > 0 ? 0 : this.#sleepTime();
        if (ms === 0) {
          // Still busy: go on, but let the driver breathe every SLICE_MS. (We
          // read the clock every 1,000 steps: it costs about as much as one.)
          if ((steps += batch.length) < 1000) continue;
          steps = 0;
          if (performance.now() - sliceStart < SLICE_MS) continue;
        }
        try {
          yield ms;
        } catch (error) {
          this.#crash(error);
        }
        sliceStart = performance.now();
      }
      return this.#outcome(root, options);
    } finally {
      current = outer;
      this.timers = [];
      this.crash = null;
      this.#running = false;
    }
  }

  // Before each batch we gather what woke us: thread answers (only if the
  // wake word moved since we last looked) and timers that are due. Each of
  // those counts a task down, which may queue it.
  #collectWakeUps(): void {
    this.seen = Atomics.load(wake, 0);
    if (busy.size > 0 && this.seen !== polledAt) {
      polledAt = this.seen;
      pollThreads();
    }
    const now = this.timers.length > 0 ? performance.now() : 0;
    while (this.timers.length > 0 && this.timers[0].deadline <= now) heapPop(this.timers).fire();
  }

  // How long the driver may sleep: until the soonest timer that still
  // matters (waits that fired early are thrown away on the way). Like
  // libuv, we sleep in whole milliseconds, so that timers due within the
  // same millisecond fire in one wake-up rather than one wake-up each.
  #sleepTime(): number {
    while (this.timers.length > 0 && this.timers[0].fired) heapPop(this.timers);
    if (this.timers.length === 0) return Infinity;
    const left = this.timers[0].deadline - performance.now();
    return left > 0 ? Math.ceil(left) : 0;
  }

  /** @internal Queues a task whose count reached zero. */
  wake(task: Task): void {
    this.queue.push(task);
    this.parked?.set();
  }

  #startTask(coro: Coro): Task {
    const task = new Task(coro, this);
    this.tasks.set(coro, task);
    this.queue.push(task);
    return task;
  }

  // One step: resume the task with its value (or throw its error in), then
  // look at what it did. It may have returned, thrown, or yielded again.
  #step(task: Task): void {
    let out: IteratorResult<unknown>;
    try {
      out = this.#resume(task);
    } catch (error) {
      return this.#finish(task, error, true);
    }
    if (task.cancelled && (out.done || !(out.value instanceof Wait && out.value.shield))) {
      // It caught its CancelledError and carried on: we do not resume it.
      warnSwallowed(out);
      return this.#finish(task, undefined, false);
    }
    if (out.done) this.#finish(task, out.value, false);
    else this.#schedule(task, out.value);
  }

  #resume(task: Task): IteratorResult<unknown> {
    const { waitingOn } = task;
    task.waitingOn = undefined;
    if (this.crash !== null && !task.cancelled) {
      task.cancelled = true;
      return task.coro.throw(new CancelledError("Cancelled, because another coroutine of the loop failed."));
    }
    let { error } = task;
    let value: unknown;
    task.error = NONE;
    if (error === NONE && waitingOn !== undefined) {
      try {
        value = this.#collect(waitingOn);
      } catch (failure) {
        error = failure;
      }
    }
    return error === NONE ? task.coro.next(value) : task.coro.throw(error);
  }

  // What a task is resumed with, once everything it waited on is done: the
  // result of the coroutine, or an array of results for a gather. An event
  // wait gives `undefined`. A coroutine that timed out gives its error.
  #collect(yielded: unknown): unknown {
    if (Array.isArray(yielded)) return yielded.map((item) => this.#collect(item));
    if (yielded instanceof Wait) return undefined;
    const result = this.results.get(yielded as Coro);
    if (result instanceof Failed) throw result.error;
    return result;
  }

  // The heart of the loop: what did the coroutine yield? Each case ends the
  // same way: the task is queued again at once, or it waits with a count.
  #schedule(task: Task, yielded: unknown): void {
    // `yield;` goes to the back of the queue, so that the others run first.
    if (yielded === undefined) return void this.queue.push(task);
    // `yield new Set([...])` starts what is new, and goes on at once.
    if (yielded instanceof Set && [...yielded].every(isCoro)) {
      for (const coro of yielded) if (!this.results.has(coro) && !this.tasks.has(coro)) this.#startTask(coro);
      return void this.queue.push(task);
    }
    // Otherwise it is one coroutine, a gather, or an event wait; or a mistake.
    const items = itemsOf(yielded);
    if (!items.every((item) => isCoro(item) && !(item instanceof Wait && item.used))) return this.#throwIn(task, invalidYield(yielded, this.blocking));
    if (items.some((item) => !(item instanceof Wait) && this.tasks.has(item as Coro) && this.#reaches(item, task))) return this.#throwIn(task, new Error("Cycle detected: a coroutine waits on itself, through the coroutines it waits on. The loop cannot finish it."));
    // The count starts one too high, so that it cannot reach zero while we
    // are still registering; the last line takes the extra one away. (This
    // is also how `yield []` and already-finished coroutines resume at once.)
    task.waitingOn = yielded;
    task.count = items.length + 1;
    for (const item of items) {
      if (item instanceof Wait) item.register(task);
      else if (this.results.has(item as Coro)) task.count--; // finished: its result is stored
      else {
        // Running already (a diamond: two coroutines wait on one), or new.
        const dep = this.tasks.get(item as Coro) ?? this.#startTask(item as Coro);
        if (dep.waiters === null) dep.waiters = [task]; // (sized for one: most have one waiter)
        else dep.waiters.push(task);
      }
    }
    task.countDown();
  }

  // Cycles: only a yield of a coroutine that is already running can close a
  // cycle, so only then do we look, following what it waits on, and what
  // those wait on, to see whether the trail leads back to the yielder.
  #reaches(item: unknown, target: Task): boolean {
    const trail = [item];
    const seen = new Set<Task>();
    while (trail.length > 0) {
      const next = trail.pop();
      const task = next instanceof Wait ? undefined : this.tasks.get(next as Coro);
      if (task === target) return true;
      if (task === undefined || seen.has(task)) continue;
      seen.add(task);
      trail.push(...itemsOf(task.waitingOn));
    }
    return false;
  }

  // The task that just yielded gets the error at that `yield`, next turn.
  #throwIn(task: Task, error: unknown): void {
    task.error = error;
    this.queue.push(task);
  }

  /**
   * @internal `timeout` throws its error into `coro` at its `yield`,
   * whatever it waits on: the task stops waiting (its waits are dropped, the
   * coroutines it waited on forget it) and is queued to receive the error.
   * Returns false if `coro` is not running here.
   */
  timeOut(coro: Coro, error: TimeoutError): boolean {
    const task = this.tasks.get(coro);
    if (task === undefined) return false;
    if (task.count > 0) {
      for (const item of itemsOf(task.waitingOn)) {
        const dep = this.tasks.get(item as Coro);
        if (item instanceof Wait) ((item.task = null), item.fire());
        else if (dep?.waiters) dep.waiters = dep.waiters.filter((waiter) => waiter !== task);
      }
      task.count = 0;
      task.waitingOn = undefined;
      this.queue.push(task);
    } // (else it is queued already: it waits on nothing)
    timeoutErrors.add(error);
    task.error = error;
    return true;
  }

  // A task is done. A normal return stores the result; a failure crashes the
  // loop (except a timeout, which is stored for the waiters to receive).
  // Either way, everyone waiting on it is counted down.
  #finish(task: Task, outcome: unknown, failed: boolean): void {
    this.tasks.delete(task.coro);
    if (!failed) this.results.set(task.coro, outcome);
    else if (this.crash === null && timeoutErrors.has(outcome as object)) this.results.set(task.coro, new Failed(outcome));
    else this.#crash(outcome);
    if (task.waiters !== null) for (const waiter of task.waiters) waiter.countDown();
  }

  // Errors and cancellation
  // -----------------------
  //
  // A crash does not tear the loop down on the spot: it turns the loop into
  // a cancelling loop, which runs on until every task has finished. From
  // then on, whenever a task is stepped for the first time, it gets a
  // `CancelledError` instead of its value (see `#resume`). To get there:
  //
  // - runnable tasks (and those not started yet) are in the queue already;
  // - tasks waiting on events or timers have those waits fired early, which
  //   counts them down as if the time had come;
  // - tasks waiting on other coroutines stay put: they are woken, and so
  //   cancelled, when those coroutines have finished being cancelled.
  //
  // So a coroutine gets its CancelledError only after everything it waits on
  // has cleaned up: in particular, after any thread it waits on has stopped.
  #crash(error: unknown): void {
    if (this.crash !== null) return void this.crash.errors.push(error);
    this.crash = { error, errors: [] };
    for (const task of this.tasks.values()) for (const item of itemsOf(task.waitingOn)) if (item instanceof Wait) item.fire();
  }

  // What `run` gives back. Why a lone error by default, rather than always a
  // group? Most of the time exactly one thing went wrong, and the others
  // took their cancellation cleanly; the original error, its stack intact,
  // is then the most useful thing to throw. If cleanup went wrong too, that
  // must not be hidden, so then we throw an `AggregateError`.
  #outcome(root: Coro, options: RunOptions): unknown {
    if (this.crash !== null) {
      const { error, errors } = this.crash;
      const others = errors.filter((e) => !(e instanceof CancelledError));
      const group = options.exceptionGroup;
      if (group === false || (group === undefined && others.length === 0)) throw error;
      throw new AggregateError([error, ...(group ? errors : others)], `A tinyio coroutine failed (${String(error)}), and ${others.length} more error(s) were raised while cancelling the others.`);
    }
    return this.#collect(root);
  }
}

// Errors that `timeout` threw into a coroutine. A coroutine that fails with
// one of these has "timed out" rather than crashed the loop, and we store
// the error, wrapped, as its result, for whoever waits on it to receive.
const timeoutErrors = new WeakSet<object>();
class Failed {
  error: unknown;
  constructor(error: unknown) {
    this.error = error;
  }
}

const DEADLOCK = "Deadlock: every coroutine is waiting, and no timer or thread can wake any of them (are they waiting on an Event that nothing will set?). All coroutines have been cancelled.";

function warnSwallowed(out: IteratorResult<unknown>): void {
  const what = out.done ? `returned ${describe(out.value)}` : `yielded ${describe(out.value)}`;
  process.emitWarning(`A tinyio coroutine caught its CancelledError and ${what} instead of letting the error propagate; the loop does not resume it, so resources it holds may leak. Clean up in a finally block (or rethrow the CancelledError).`, "TinyioWarning");
}

// The error for a yield the loop cannot wait on, with a hint for the usual
// mistakes.
function invalidYield(yielded: unknown, blocking: boolean): TypeError {
  let what = describe(yielded);
  if (Array.isArray(yielded) || yielded instanceof Set) {
    const items = [...yielded];
    const index = items.findIndex((item) => !isCoro(item) || (item instanceof Wait && item.used));
    what = `${Array.isArray(yielded) ? "an array" : "a Set"} whose item ${index} is ${describe(items[index])}`;
  }
  let hint = "";
  if (itemsOf(yielded).some((item) => item instanceof Wait)) hint = " Each `event.wait()` or `sleep()` can be yielded once: make a new one to wait again.";
  else if (isPromise(yielded)) hint = blocking ? " A Promise cannot settle while the synchronous `Loop.run` blocks the thread: run the loop with `tinyio.toPromise(...)` and wait with `yield tinyio.fromPromise(promise)`." : " Wait for a promise with `yield tinyio.fromPromise(promise)`.";
  else if (typeof yielded === "function") hint = " Did you forget to call it (`yield work()` rather than `yield work`)?";
  return new TypeError(`A tinyio coroutine yielded ${what}. A coroutine may yield nothing (\`yield;\`), a coroutine, an array of coroutines (to wait for all), a Set of coroutines (to start them in the background), or a wait such as \`event.wait()\`.${hint}`);
}

function describe(value: unknown): string {
  if (isPromise(value)) return "a Promise";
  if (value instanceof Wait) return "an event wait (`event.wait()` or `sleep()`) that was yielded already";
  if (isCoro(value)) return "a coroutine";
  if (typeof value === "function") return `the function ${value.name || "(anonymous)"}`;
  if (typeof value === "object" && value !== null) return `an object (${value.constructor?.name ?? "with no prototype"})`;
  return value == null ? String(value) : `the ${typeof value} ${typeof value === "string" ? JSON.stringify(value) : String(value)}`;
}

// (Duck typing, as elsewhere in JavaScript: a coroutine is anything with
// `next` and `throw`, a promise anything with `then`.)
const isCoro = (value: unknown): value is Coro => typeof (value as Coro)?.next === "function" && typeof (value as Coro).throw === "function";
const isPromise = (value: unknown): value is PromiseLike<unknown> => typeof (value as PromiseLike<unknown>)?.then === "function";

function checkMs(ms: unknown, where: string): void {
  if (typeof ms !== "number") throw new TypeError(`${where} takes a number of milliseconds, but got ${describe(ms)}.`);
  if (!(ms >= 0)) throw new RangeError(`${where} takes a non-negative number of milliseconds, but got ${ms}.`);
}

// Time and synchronisation
// ------------------------
//
// Everything here is built on `Event` and a background `Set`, a few lines
// each, as the Python original builds them. None of it touches the loop's
// insides, except `timeout`, which must throw into another coroutine.

/**
 * A coroutine that finishes after `ms` milliseconds. `sleep(0)` still goes
 * through the loop: every coroutine that is runnable now runs first.
 * @param ms a non-negative number of milliseconds (checked at the call).
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * function* main() { yield tinyio.sleep(50); return "rested"; }
 * console.log(new tinyio.Loop().run(main())); // "rested"
 * ```
 */
export function sleep(ms: number): Coro<void> {
  checkMs(ms, "sleep(ms)");
  return never.wait(ms);
}

// A sleep is a wait on an event that nobody can set, so that only its
// deadline ends it. (One such event serves every sleep.)
const never = new Event();

/**
 * Runs `coro` for at most `ms` milliseconds. On time, returns
 * `[value, true]`. Otherwise `coro` gets a {@link TimeoutError} thrown in at
 * its `yield` (so its `finally` blocks run), and once it has finished this
 * returns `[undefined, false]`. Other coroutines waiting on `coro` get the
 * `TimeoutError` too; the rest of the loop carries on.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * function* slow() { yield tinyio.sleep(1000); return "done"; }
 * function* main() { return yield tinyio.timeout(slow(), 20); }
 * console.log(new tinyio.Loop().run(main())); // [undefined, false]
 * ```
 */
export function timeout<T>(coro: Coro<T>, ms: number): Coro<[T, true] | [undefined, false]> {
  if (!isCoro(coro)) throw new TypeError(`timeout(coro, ms) needs a coroutine, but got ${describe(coro)}.`);
  checkMs(ms, "timeout(coro, ms)");
  return timeoutCoro(coro, ms);
}

// A plain `yield coro` cannot be given a deadline, but an event wait can. So
// a watcher in the background waits for `coro`, notes its result and sets
// `done`; we wait on `done` with the deadline.
function* timeoutCoro<T>(coro: Coro<T>, ms: number): Coro<[T, true] | [undefined, false]> {
  const done = new Event();
  const outcome: { value?: T } = {};
  yield new Set([watch(coro, done, outcome)]);
  yield done.wait(ms);
  // (`coro` may have finished right at the deadline, its watcher not yet
  // run: then it is not running, and not ours to time out.)
  const timedOut = !done.isSet() && current!.timeOut(coro, new TimeoutError(`The coroutine did not finish within ${ms} ms.`));
  yield done.wait(); // until `coro` has finished, its cleanup included
  return timedOut ? [undefined, false] : [outcome.value as T, true];
}

function* watch<T>(coro: Coro<T>, done: Event, outcome: { value?: T }): Coro<void> {
  try {
    outcome.value = yield coro;
  } finally {
    done.set();
  }
}

/**
 * What {@link Semaphore.acquire} gives: a permit to give back, with
 * `release()` or at the end of a `using` block.
 */
export interface Release {
  /** Gives the permit back. Throws if it was given back already. */
  release(): void;
  /** Gives the permit back, unless `release()` did already. */
  [Symbol.dispose](): void;
}

/**
 * Lets at most `value` coroutines hold a permit at once. Waiters are served
 * first come, first served: a released permit goes straight to the longest
 * waiter, and a newcomer never overtakes one.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * const sem = new tinyio.Semaphore(2);
 * function* job(i: number) {
 *   using _ = yield sem.acquire(); // given back at the end of the block
 *   yield tinyio.sleep(10);
 *   return i;
 * }
 * function* main() { return yield [job(1), job(2), job(3)]; }
 * console.log(new tinyio.Loop().run(main())); // [1, 2, 3]
 * ```
 */
export class Semaphore {
  #free: number;
  #queue: Event[] = [];

  /** @param value how many may hold a permit at once: a positive integer. */
  constructor(value: number) {
    this.#free = checkCount(value, "new Semaphore(value)");
  }

  /**
   * A coroutine that waits for a permit and returns it as a {@link Release}.
   * Where the caller can be timed out or cancelled while it waits, prefer
   * `yield* sem.acquire()`: under a plain `yield`, a permit that arrives
   * just as the caller is interrupted has nobody to receive it.
   */
  *acquire(): Coro<Release> {
    // Invariant: permits are free only while nobody queues for one.
    if (this.#free > 0) this.#free--;
    else {
      const handover = new Event();
      this.#queue.push(handover);
      try {
        yield handover.wait();
      } catch (error) {
        // Cancelled or timed out in the queue: leave it, and if a permit was
        // handed to us in the meantime, pass it on rather than lose it.
        if (handover.isSet()) this.#release();
        else this.#queue.splice(this.#queue.indexOf(handover), 1);
        throw error;
      }
    }
    let released = false;
    const release = () => {
      if (released) throw new Error("This semaphore permit was released already; release each permit once.");
      released = true;
      this.#release();
    };
    return { release, [Symbol.dispose]: () => released || release() };
  }

  #release(): void {
    const next = this.#queue.shift();
    if (next === undefined) this.#free++;
    else next.set();
  }
}

/**
 * A {@link Semaphore} of one: at most one holder at a time.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * const lock = new tinyio.Lock();
 * function* main() { const permit = yield lock.acquire(); try { return "mine"; } finally { permit.release(); } }
 * console.log(new tinyio.Loop().run(main())); // "mine"
 * ```
 */
export class Lock extends Semaphore {
  constructor() { super(1); }
}

/**
 * Holds coroutines back until `parties` of them have called `wait()`.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * const barrier = new tinyio.Barrier(2);
 * function* main() { return yield [barrier.wait(), barrier.wait()]; }
 * console.log(new tinyio.Loop().run(main())); // [0, 1]
 * ```
 */
export class Barrier {
  #parties: number;
  #arrived = 0;
  #everyone = new Event();

  /** @param parties how many coroutines to wait for: a positive integer. */
  constructor(parties: number) {
    this.#parties = checkCount(parties, "new Barrier(parties)");
  }

  /** Waits for all parties; returns this caller's arrival index, from 0. */
  *wait(): Coro<number> {
    const index = this.#arrived++;
    if (this.#arrived >= this.#parties) this.#everyone.set();
    yield this.#everyone.wait();
    return index;
  }
}

/**
 * Starts `coros` in the background, and returns one coroutine per input:
 * yielding the first gives the first result to arrive, and so on.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * function* nap(ms: number) { yield tinyio.sleep(ms); return ms; }
 * function* main() {
 *   const order = [];
 *   for (const next of yield tinyio.asCompleted([nap(30), nap(10), nap(20)])) order.push(yield next);
 *   return order;
 * }
 * console.log(new tinyio.Loop().run(main())); // [10, 20, 30]
 * ```
 */
export function asCompleted<T>(coros: Set<Coro<T>> | Coro<T>[]): Coro<Iterable<Coro<T>>> {
  if (!(coros instanceof Set || Array.isArray(coros)) || ![...coros].every(isCoro)) throw new TypeError(`asCompleted(coros) needs a Set or an array of coroutines, but got ${describe(coros)}.`);
  return asCompletedCoro([...coros]);
}

// The k-th result to arrive goes into `results[k]` and sets `arrived[k]`.
function* asCompletedCoro<T>(coros: Coro<T>[]): Coro<Iterable<Coro<T>>> {
  const arrived = coros.map(() => new Event());
  const results: T[] = [];
  yield new Set(
    coros.map(function* (coro): Coro<void> {
      results.push(yield coro);
      arrived[results.length - 1].set();
    }),
  );
  return arrived.map(function* (event, k): Coro<T> {
    yield event.wait();
    return results[k];
  });
}

/**
 * The gather `yield [a, b]`, typed: `yield* all([a, b])` returns a tuple of
 * the coroutines' return types.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * function* num() { return 1; }
 * function* str() { return "one"; }
 * function* main() { const [n, s] = yield* tinyio.all([num(), str()]); return `${n} is ${s}`; }
 * console.log(new tinyio.Loop().run(main())); // "1 is one"
 * ```
 */
export function* all<const T extends readonly Coro[]>(coros: T): Coro<{ -readonly [K in keyof T]: T[K] extends Coro<infer R> ? R : never }> {
  return yield coros;
}

function checkCount(n: unknown, where: string): number {
  if (!Number.isInteger(n) || (n as number) < 1) throw new RangeError(`${where} needs a positive integer, but got ${describe(n)}.`);
  return n as number;
}

// Threads
// -------
//
// JavaScript runs one thread per isolate, so "a thread" here is a
// `worker_threads` Worker: a second JavaScript world with its own globals.
// Nothing is shared with it but messages (copied by structured clone) and
// the wake word. The function to run travels as its source text, which is
// why it must be self-contained.
//
// The worker's side is this script, evaluated in each worker. It compiles
// each function once, runs it with `this = { signal }`, awaits it if it is
// async, posts the answer on its port, and notifies the wake word so that a
// loop asleep in `Atomics.wait` wakes up and reads the answer with
// `receiveMessageOnPort` (the loop never needs Node's event loop to turn).
// If the worker dies (`process.exit`, an uncaught error in a callback), its
// `exit` handler still posts and notifies: a dead thread is never a hang.
//
// `__name` is passed in because tsx (esbuild's keepNames) inserts calls to
// it into compiled functions that declare named functions or classes.
const WORKER_SOURCE = `(() => { // (a function scope, so that these names stay hidden from fn)
const { workerData: { wake, port } } = require("node:worker_threads");
globalThis.require ??= require; // (Bun scopes require to this script; fn may need it)
const compiled = new Map();
const __name = (fn, name) => Object.defineProperty(fn, "name", { value: name, configurable: true });
class CancelledError extends Error { name = "CancelledError"; }
let controller, fatal;
const describe = (e) => e instanceof Error ? { name: e.name, message: e.message, stack: e.stack } : { name: "Error", message: "The thread threw a non-error: " + String(e), stack: "" };
function answer(message) {
  try { port.postMessage(message); }
  catch (e) { port.postMessage({ error: { ...describe(e), message: "The thread's result cannot be sent back (structured clone refused it): " + e.message } }); }
  Atomics.add(wake, 0, 1);
  Atomics.notify(wake, 0);
}
port.on("message", async ({ source, args, abort }) => {
  if (abort) return controller.abort(new CancelledError("Cancelled by the tinyio loop."));
  controller = new AbortController();
  const signal = controller.signal;
  try {
    let fn = compiled.get(source);
    try { fn ??= new Function("__name", "return (" + source + "\\n);")(__name); }
    catch (e) { throw new TypeError("runInThread cannot compile fn from its source text (" + e.message + "): pass a function or an arrow function; a method written in shorthand cannot travel."); }
    compiled.set(source, fn);
    answer({ value: await fn.apply({ signal }, args) });
  } catch (e) {
    answer(signal.aborted && e === signal.reason ? { cancelled: true } : { error: describe(e) });
  }
});
process.on("uncaughtException", (e) => { fatal = e; process.exit(1); });
process.on("exit", (code) => answer({ exit: code, error: fatal && describe(fatal) }));
})();`;

/**
 * How long a thread has, once cancelled, to settle before its worker is
 * terminated: async work sees `this.signal` abort and may clean up meanwhile.
 */
export const CANCEL_GRACE_MS = 250;
const IDLE_MS = 30_000;

/** What `this` is inside a function run by {@link runInThread}. */
export type ThreadContext = {
  /** Aborts (with a `CancelledError` as its reason) when the call is cancelled. */
  signal: AbortSignal;
};

// The main side of one worker, and of the call it runs. A worker is `busy`
// from when a call is posted to it until its answer has been read.
type Answer = { value?: unknown; error?: { name: string; message: string; stack: string }; cancelled?: true; exit?: number };
type Call = { done: Event; answer?: Answer; cancelled?: boolean };
type Thread = { worker: Worker; port: MessagePort; call?: Call; idleSince?: number };
const busy = new Set<Thread>();

// The loop calls this whenever the wake word has moved: read the answers.
function pollThreads(): void {
  for (const thread of busy) {
    const received = receiveMessageOnPort(thread.port);
    if (received === undefined) continue;
    busy.delete(thread);
    thread.call!.answer = received.message as Answer;
    thread.call!.done.set();
  }
}

// A call's result, or the thread's error rebuilt here, with its name,
// message and the thread's own stack.
function resultOf({ value, error, exit }: Answer): unknown {
  if (error === undefined && exit === undefined) return value;
  const { name, message, stack } = error ?? { name: "Error", message: `The thread exited with code ${exit} before the function returned.`, stack: "" };
  const hint = name === "ReferenceError" ? " (A function run in a thread must be self-contained: it travels as source text, so it cannot use variables from where it was written. Pass them as arguments.)" : "";
  throw Object.assign(new Error(message + hint), { name, stack: stack ? stack.replace(message, message + hint) : `${name}: ${message}` });
}

/**
 * A bounded set of worker threads. Calls beyond `maxThreads` wait their
 * turn, first come first served. Idle workers are kept for reuse and never
 * keep the process alive.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * const pool = new tinyio.ThreadPool(2);
 * function* main() { return yield pool.map((x: number) => x * x, [1, 2, 3]); }
 * console.log(new tinyio.Loop().run(main())); // [1, 4, 9]
 * ```
 */
export class ThreadPool {
  // The bound is a semaphore: it already serves waiters in order, and
  // forgets a waiter that is cancelled in the queue.
  #slots: Semaphore;
  #idle: Thread[] = [];

  /** @param maxThreads how many workers may run at once: a positive integer. */
  constructor(maxThreads: number) {
    this.#slots = new Semaphore(checkCount(maxThreads, "new ThreadPool(maxThreads)"));
  }

  /** Runs `fn(...args)` on a worker of this pool; see {@link runInThread}. */
  *runInThread<A extends unknown[], R>(fn: (this: ThreadContext, ...args: A) => R, ...args: A): Coro<Awaited<R>> {
    const source = sourceOf(fn);
    const permit: Release = yield* this.#slots.acquire();
    // Workers idle for over IDLE_MS are retired as calls come; the one idle
    // for the shortest time is reused.
    while (this.#idle.length > 0 && performance.now() - this.#idle[0].idleSince! > IDLE_MS) void this.#idle.shift()!.worker.terminate();
    const thread = this.#idle.pop() ?? spawn();
    const call: Call = { done: new Event() };
    try {
      thread.port.postMessage({ source, args }); // may throw: an argument that cannot be cloned
      thread.call = call;
      thread.worker.ref(); // a busy worker keeps Node alive (for `toPromise`)
      busy.add(thread);
      yield call.done.wait();
      return resultOf(call.answer!) as Awaited<R>;
    } catch (reason) {
      // (`thread.call` is set only once the post went through.)
      if (thread.call !== call) throw new TypeError(`runInThread cannot send its arguments to a thread: structured clone refused them (${(reason as Error).message})`);
      // Cancelled (or timed out) at our `yield` while the thread works: ask
      // it to stop, and give it the grace period to answer. Only then does
      // the error go on (and `finally` terminates a worker that did not
      // answer), so whoever waits on this call knows the thread has
      // stopped. The grace wait is shielded: a cancelled coroutine may yield it.
      if (busy.has(thread)) {
        call.cancelled = true;
        thread.port.postMessage({ abort: true });
        yield shielded(call.done.wait(CANCEL_GRACE_MS));
        const answer = call.answer as Answer | undefined; // (set meanwhile by `pollThreads`)
        if (answer?.error) resultOf(answer); // the thread's own error, from its cleanup
      }
      throw reason;
    } finally {
      // A worker is kept for the next call only if it answered normally.
      busy.delete(thread);
      thread.worker.unref();
      thread.idleSince = performance.now();
      if (call.answer !== undefined && !call.cancelled && call.answer.exit === undefined) this.#idle.push(thread);
      else void thread.worker.terminate();
      permit.release();
    }
  }

  /** Runs `fn` on each of `xs` in this pool; returns the results in order. */
  *map<T, R>(fn: (this: ThreadContext, x: T) => R, xs: Iterable<T>): Coro<Awaited<R>[]> {
    return yield [...xs].map((x) => this.runInThread(fn, x));
  }
}

function spawn(): Thread {
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { wake, port: port2 }, transferList: [port2] });
  worker.on("error", () => {}); // a dying worker reaches us through its port instead
  return { worker, port: port1 };
}

let defaultPool: ThreadPool | undefined;

/**
 * Runs `fn(...args)` on a worker thread and resumes with its result (an
 * async `fn` is awaited in the thread). `fn` travels as source text, so it
 * must be self-contained: it may use its arguments, globals and
 * `require`/`import()`, not variables it closes over. Arguments and result
 * travel by structured clone. Inside, `this.signal` aborts when the call is
 * cancelled; code still running after {@link CANCEL_GRACE_MS} is stopped by
 * terminating its worker. Calls share one pool of at most
 * `min(32, availableParallelism() + 4)` workers.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * function* main() {
 *   return yield tinyio.runInThread((n: number) => {
 *     let total = 0;
 *     for (let i = 1; i <= n; i++) total += i;
 *     return total;
 *   }, 1000);
 * }
 * console.log(new tinyio.Loop().run(main())); // 500500
 * ```
 */
export function runInThread<A extends unknown[], R>(fn: (this: ThreadContext, ...args: A) => R, ...args: A): Coro<Awaited<R>> {
  defaultPool ??= new ThreadPool(Math.min(32, availableParallelism() + 4));
  return defaultPool.runInThread(fn, ...args);
}

// A function's source, or why it has none worth sending.
function sourceOf(fn: unknown): string {
  if (typeof fn !== "function") throw new TypeError(`runInThread(fn, ...args) needs a function, but got ${describe(fn)}.`);
  const source = Function.prototype.toString.call(fn);
  if (source.endsWith("[native code] }")) throw new TypeError(`runInThread cannot send ${describe(fn)} to a thread: it is a native or bound function, which has no source text. Wrap it in an arrow function that calls it, e.g. runInThread((x) => Math.sqrt(x), 2).`);
  return source;
}

// Promises: living beside Node's own event loop
// ---------------------------------------------
//
// `Loop.run` blocks its thread, so while it runs, no promise can settle and
// no Node timer can fire. `toPromise` is the second driver of the same
// core: where `run` sleeps in `Atomics.wait`, it awaits `Atomics.waitAsync`
// on the same wake word (raced with a Node timer for the soonest deadline),
// so Node's event loop turns while tinyio has nothing to do. `Event.set()`
// called from a promise callback notifies the word, which wakes it.

/**
 * Runs `coro` on a fresh loop driven from Node's event loop, so promises,
 * I/O and timers of the rest of the program keep running; resolves with what
 * `coro` returned, or rejects as `run` would throw. Aborting `signal`
 * cancels every coroutine as an error would, and rejects with its reason.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * function* main() { yield tinyio.sleep(10); return "done"; }
 * console.log(await tinyio.toPromise(main())); // "done"
 * ```
 */
export async function toPromise<R>(coro: Coro<R>, options: RunOptions & { signal?: AbortSignal } = {}): Promise<R> {
  const { signal } = options;
  const loop = new Loop();
  const runtime = loop.start(coro, options, false);
  const wakeUp = () => notify(); // our own listener: two runs may share a signal
  signal?.addEventListener("abort", wakeUp);
  try {
    for (let step = signal?.aborted ? runtime.throw(signal.reason) : runtime.next(); ; ) {
      if (step.done) return step.value;
      await idle(loop.seen, step.value);
      // An abort crashes the loop, once, as an error would.
      step = signal?.aborted && loop.crash === null ? runtime.throw(signal.reason) : runtime.next();
    }
  } finally {
    signal?.removeEventListener("abort", wakeUp);
  }
}

// Sleep without blocking: until the wake word moves, or `ms` pass. A pending
// `waitAsync` does not keep Node alive, so the Node timer does that while a
// deadline is pending; busy workers keep it alive while threads work.
async function idle(seen: number, ms: number): Promise<void> {
  if (ms === 0) return new Promise((resolve) => setImmediate(resolve));
  const woken = Atomics.waitAsync(wake, 0, seen, ms);
  if (!woken.async) return;
  let timer: NodeJS.Timeout | undefined;
  if (ms !== Infinity) await Promise.race([woken.value, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  else await woken.value;
  clearTimeout(timer);
}

/**
 * Waits for a promise. Given a function, calls it with an `AbortSignal` that
 * aborts if the waiting coroutine is cancelled. A rejection is raised as the
 * original error. Only under {@link toPromise}: under the synchronous
 * `Loop.run` no promise can settle, and this throws an error saying so.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * function* main() { return yield tinyio.fromPromise(Promise.resolve(42)); }
 * console.log(await tinyio.toPromise(main())); // 42
 * ```
 */
export function fromPromise<T>(promise: PromiseLike<T> | ((signal: AbortSignal) => PromiseLike<T>)): Coro<T> {
  const controller = new AbortController();
  const settled = new Event();
  let outcome: { value: T } | { error: unknown } | undefined;
  const listen = (p: unknown) => {
    if (!isPromise(p)) throw new TypeError(`fromPromise needs a promise (or a function returning one), but got ${describe(p)}.`);
    p.then((value) => ((outcome = { value: value as T }), settled.set()), (error) => ((outcome = { error }), settled.set()));
  };
  // A promise we listen to at once: one that rejected before the coroutine
  // first ran would count as unhandled, and crash Node. A function we call
  // when the coroutine first runs: if it is cancelled before, nothing starts.
  if (typeof promise !== "function") listen(promise);
  return (function* (): Coro<T> {
    if (current?.blocking !== false) throw new Error("fromPromise cannot wait under the synchronous Loop.run, which blocks the thread so that no promise can settle. Run the loop with tinyio.toPromise(...) instead, or do the async work in a thread: tinyio.runInThread(async () => ...).");
    if (typeof promise === "function") listen(promise(controller.signal));
    try {
      yield settled.wait();
    } catch (error) {
      controller.abort(error);
      throw error;
    }
    if ("error" in outcome!) throw outcome.error;
    return outcome!.value;
  })();
}

// Isolation
// ---------
//
// `isolate` runs a coroutine on a nested loop, and is the third driver of
// the stepping core: a coroutine of the outer loop. Whenever the nested loop
// has nothing to run, the driver waits, as an outer coroutine, for what the
// nested loop would have waited for: its soonest deadline, or its `parked`
// event, which the nested loop sets whenever one of its tasks is woken. So
// the outer loop runs on meanwhile, and the outer driver is the one that
// decides about deadlocks. If the nested loop crashes, only it is cancelled.

/**
 * Runs `coro` (and everything it yields) on a nested loop without blocking
 * the other coroutines. Returns `[value, true]`, or `[error, false]` if it
 * failed (its nested loop then cancelled only its own coroutines). A
 * cancellation of the outer loop is not caught: it cancels the nested loop
 * too and propagates.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * function* fails() { yield; throw new Error("oops"); }
 * function* main() { const [error, ok] = yield tinyio.isolate(fails()); return [String(error), ok]; }
 * console.log(new tinyio.Loop().run(main())); // ["Error: oops", false]
 * ```
 */
export function* isolate<R>(coro: Coro<R>, options?: RunOptions): Coro<[R, true] | [unknown, false]> {
  const inner = new Loop();
  const runtime = inner.start(coro, options, current?.blocking !== false);
  // `outerError`: what the outer loop threw in at our `yield` (its
  // cancellation, say), which we pass on to the nested loop, wait for it
  // to finish cancelling, and then raise.
  let outerError: unknown = NONE;
  let passOn: unknown = NONE;
  for (;;) {
    let step: IteratorResult<number, R>;
    try {
      step = passOn === NONE ? runtime.next() : runtime.throw(passOn);
    } catch (error) {
      if (outerError !== NONE) throw outerError;
      return [error, false]; // the nested loop crashed, and only it
    }
    if (step.done) {
      if (outerError !== NONE) throw outerError;
      return [step.value, true];
    }
    passOn = NONE;
    inner.parked = new Event();
    const wait = inner.parked.wait(step.value);
    try {
      // (Once cancelled, we wait for the nested loop to finish cancelling.)
      yield outerError === NONE ? wait : shielded(wait);
    } catch (error) {
      if (outerError !== NONE) throw error;
      outerError = passOn = error;
    }
    inner.parked = null;
  }
}

/**
 * Schedules `coro` on this loop and returns a fresh coroutine that resolves
 * to the same result: the way to hand one coroutine's result into an
 * {@link isolate}d loop, whose nested loop does not know the outer's results.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * function* shared() { yield; return 7; }
 * function* main() {
 *   const s = shared();
 *   const c = yield tinyio.copy(s);
 *   function* inner() { return (yield c) * 6; }
 *   return yield tinyio.isolate(inner());
 * }
 * console.log(new tinyio.Loop().run(main())); // [42, true]
 * ```
 */
export function* copy<T>(coro: Coro<T>): Coro<Coro<T>> {
  const done = new Event();
  const outcome: { value?: T } = {};
  yield new Set([watch(coro, done, outcome)]); // as in `timeout`
  return (function* replay(): Coro<T> {
    yield done.wait();
    return outcome.value as T;
  })();
}

// You made it
// -----------
//
// That is the whole loop: one counter, one wake word, one stepping core and
// its three drivers. To see it at work, read examples/ in order, starting
// with examples/01-hello.ts; tinyio.test.ts has a spec for every behaviour
// promised here.
