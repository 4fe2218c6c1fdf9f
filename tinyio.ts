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
 *   {@link Barrier}, {@link Queue}, {@link asCompleted}, {@link all};
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
// A thing that can finish is either another coroutine or a `Wait`: on an
// `Event`, on a deadline, or for a semaphore's permit. That is all:
// sleeping, threads, promises and nested loops are built out of those two,
// so one mechanism wakes everything. (The Python original calls the counter
// `_WaitingFor`.)
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
 * untyped (use `yield*` or {@link all} for typed results). An async
 * generator (`async function*`) is not a coroutine.
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

function notify(): void { Atomics.add(wake, 0, 1); Atomics.notify(wake, 0); }

// The worker threads with a call out (see Threads), whose answers will wake
// us. While there are none, and no timer is set, a loop that has nothing to
// run cannot be woken by anything: it is deadlocked.
const busy = new Set<Thread>();

// Things that finish: tasks and waits
// -----------------------------------
//
// A coroutine can wait on two kinds of thing, and both are `Awaitable`s:
// each finishes once, with an outcome, and then counts down whoever waits on
// it (its `waiters`). One is the `Task`, the record of a coroutine. The
// other is the `Wait`, what `event.wait(ms)`, `sleep(ms)` and
// `sem.acquire()` return. The loop treats both alike: two coroutines may
// wait on one; one that has finished gives its stored outcome to whoever
// yields it later; a timeout interrupts either.
//
// An awaitable is in one of four states, and moves only forward:
//
//     NEW ──started──▶ RUNNING ──returns──▶ RETURNED   (result: its value)
//                         └─────throws────▶ FAILED     (result: the error)
//
// An awaitable that failed with the TimeoutError a timeout threw into it
// has "timed out": that is its outcome, not a crash of the loop.
const NEW = 0;
const RUNNING = 1;
const RETURNED = 2;
const FAILED = 3;

// Things wait on one item or on several, and have one waiter or several.
// One is kept bare, and several in an array, since most have one: an array
// for each would cost a coroutine a third more memory. This reads either as
// a list.
const itemsOf = <T>(items: T | T[] | null | undefined): T[] => (items == null ? [] : Array.isArray(items) ? items : [items]);

class Awaitable {
  state: number = NEW;
  result: unknown = undefined;
  // Whether a timeout interrupted it (see `timeout`).
  interrupted = false;
  // The tasks (or a timeout's waits) that wait on it: one, or an array.
  waiters: Awaitable | Awaitable[] | null = null;

  // Done: keep the outcome, then count down everyone who waited.
  settle(result: unknown, failed: boolean): void {
    this.state = failed ? FAILED : RETURNED;
    this.result = result;
    const { waiters } = this;
    this.waiters = null;
    if (waiters instanceof Awaitable) waiters.countDown();
    else if (waiters !== null) for (const waiter of waiters) waiter.countDown();
  }

  addWaiter(waiter: Awaitable): void {
    const { waiters } = this;
    if (waiters === null) this.waiters = waiter;
    else if (waiters instanceof Awaitable) this.waiters = [waiters, waiter];
    else waiters.push(waiter);
  }

  // `waiter` waits on it no more; returns how many still do.
  dropWaiter(waiter: Awaitable): number {
    const left = itemsOf(this.waiters).filter((other) => other !== waiter);
    this.waiters = left.length > 1 ? left : (left[0] ?? null);
    return left.length;
  }

  // What a waiter does when something it waits on has finished (see `Task`
  // and `Wait`).
  countDown(): void {}
}

// Every coroutine the loop meets gets one `Task`, its record from start to
// finish: while it runs, what it waits on and the counter of the map above;
// once done, its outcome. (Where the record is kept comes just below.)
class Task extends Awaitable {
  coro: Coro;
  loop: Loop;
  // What it waits on (one awaitable, or an array of them for a gather), and
  // how many of those have not finished. With a count of 0 it is queued.
  waitingOn: Awaitable | Awaitable[] | undefined = undefined;
  count = 0;
  // An error to throw in when it next runs, unless NONE.
  error: unknown = NONE;
  // A timeout that came before its first step, to apply once it has taken
  // it (a coroutine always gets that one, as in the Python original), and
  // whether it has.
  deferred: TimeoutError | null = null;
  stepped = false;
  // Its neighbours in its loop's list of live tasks (see `Loop`).
  older: Task | null = null;
  newer: Task | null = null;
  constructor(coro: Coro, loop: Loop) { super(); this.coro = coro; this.loop = loop; }

  override countDown(): void { if (--this.count === 0) this.loop.wake(this); }
}

// A coroutine's record lives on the coroutine itself, under a symbol of
// ours: found with one property read, and alive exactly as long as the
// coroutine is, so the loop keeps nothing alive that you dropped. (A
// `WeakMap` of every live coroutine would do as much, but every garbage
// collection of young objects has to go through it: that halved the speed
// of a busy loop.) A coroutine that refuses the property, frozen or a proxy
// that says no, keeps its record in a `WeakMap` instead.
const RECORD: unique symbol = Symbol("tinyio.record");
const refused = new WeakMap<object, Task>();

// A coroutine's record, if it has one. (What a proxy hands back is checked:
// only a task of ours, for this very coroutine, counts.)
function taskOf(coro: Coro): Task | undefined {
  const task: unknown = (coro as { [RECORD]?: unknown })[RECORD] ?? refused.get(coro);
  return task instanceof Task && task.coro === coro ? task : undefined;
}

// A coroutine's record, made (in state NEW) if it has none yet.
function recordFor(coro: Coro, loop: Loop): Task {
  const found = taskOf(coro);
  if (found !== undefined) return found;
  const task = new Task(coro, loop);
  try {
    (coro as { [RECORD]?: Task })[RECORD] = task;
  } catch {
    // (refused, in strict code: we look below)
  }
  // Refused, silently in sloppy code, or not kept (a proxy that says yes):
  if (taskOf(coro) !== task) refused.set(coro, task);
  return task;
}

// The record to look at for a coroutine: its task, or the wait itself.
const recordOf = (coro: Coro): Awaitable | undefined => (coro instanceof Wait ? coro : taskOf(coro));

// A coroutine "timed out" when a timeout interrupted it and it then ended
// with a TimeoutError: a fact about the record, not about an error object,
// which may travel anywhere.
const timedOut = (record: Awaitable | undefined): boolean => record?.state === FAILED && record.interrupted && isA(record.result, TimeoutError);

// Whether `error`, thrown at a `yield coro`, is the outcome of `coro` timing
// out (and not, say, a CancelledError that came instead).
const isTimeoutOf = (coro: Coro, error: unknown): boolean => timedOut(recordOf(coro)) && recordOf(coro)!.result === error;

// `instanceof`, for values that users hand us: a proxy's trap may throw.
function isA(value: unknown, type: Function): boolean { try { return value instanceof type; } catch { return false; } }

// A `Wait` comes from a `Source` (an `Event`, a `Semaphore`, a `Queue`, a
// worker thread), which fires it, maybe with a value: a permit, for a
// semaphore. Its deadline, if it has one, sits in its loop's timer heap.
//
//                 ┌──────────── every waiter left before it fired ◀───────────┐
//                 ▼                                                             │
//     NEW ──yielded──▶ RUNNING ──fire(value)──▶ RETURNED ──its waiter resumes──▶ taken
//      ▲                  │                        │
//      │                  └─deadline, crash:       └─its waiter was resumed with an
//      │                    expire(); timeout:       error instead: the source takes
//      │                    interrupt()              the value back ...
//      └──────────────────────────────────────────────┘ ... and the wait is as new
//
// So a permit is never lost: a permit handed to a coroutine that is then
// timed out or cancelled before it runs goes back to the semaphore, which
// hands it to the next in line. And because the wait is yielded by the
// waiting coroutine itself, `yield sem.acquire()` is as safe as `yield*
// sem.acquire()`: there is no go-between coroutine to lose it. A wait that
// went back to NEW waits afresh when it is yielded again.
//
// A wait that carries a value (a permit, an item) is `exclusive`: one
// coroutine at a time may wait on it, and one takes its value. The others
// (an event's, a sleep) may be shared by any number of coroutines.
interface Source {
  exclusive?: boolean;
  // A wait was yielded: fire it now, or remember it for later.
  add(wait: Wait): void;
  // Forget `wait`; and if it was fired with a value, take the value back.
  drop(wait: Wait): void;
  // Its value was taken. (Only a queue needs to know.)
  taken?(wait: Wait): void;
}

class Wait extends Awaitable {
  source: Source;
  deadline: number;
  timer: Timer | null = null;
  loop: Loop | null = null;
  // How many waiters have yet to resume since it fired, and whether one of
  // them took its value; and whether its source holds it.
  claims = 0;
  took = false;
  held = false;
  constructor(source: Source, ms: number) {
    super();
    this.source = source;
    this.deadline = ms === Infinity ? Infinity : performance.now() + ms;
  }

  // First yielded: it asks its source, and its deadline goes into the heap.
  register(loop: Loop): void {
    this.state = RUNNING;
    this.loop = loop;
    this.held = true;
    this.source.add(this);
    if (this.state === RUNNING && this.deadline !== Infinity) loop.addTimer(this);
  }

  // Once it has ended, its timer (if any) lets go of it.
  override settle(result: unknown, failed: boolean): void {
    if (this.timer !== null) this.timer.wait = null;
    super.settle(result, failed);
  }

  // Its source fires it.
  fire(value?: unknown): void {
    if (this.state !== RUNNING) return;
    this.claims = itemsOf(this.waiters).length;
    this.settle(value, false);
    if (this.claims === 0) this.leave(false); // (nobody waits: it goes straight back)
  }

  // A waiter resumes, with the value or with an error instead. Once none
  // is left to, a value that nobody took goes back, and the wait is as new.
  leave(took: boolean): void {
    this.took ||= took;
    if (--this.claims > 0) return;
    if (this.took) this.source.taken?.(this);
    else if (this.source.exclusive) this.reset();
  }

  // Its source forgets it (and takes back the value it gave, if any).
  forget(): void {
    if (!this.held) return;
    this.held = false;
    this.source.drop(this);
  }

  // Back to NEW, to be yielded afresh. (Its deadline, counted from its
  // making, still holds.)
  reset(): void {
    this.forget();
    if (this.timer !== null) this.timer.wait = null;
    this.timer = null;
    this.state = NEW;
    this.result = undefined;
    this.waiters = null;
    this.took = false;
  }

  // Its deadline passed, or the loop crashed: it ends without a value.
  expire(): void { if (this.state === RUNNING) { this.forget(); this.settle(undefined, false); } }

  // Its deadline passed. (A timeout does otherwise: see `Timeout`.)
  timeUp(): void { this.expire(); }

  // A timeout interrupted it: it ends with the TimeoutError.
  interrupt(error: TimeoutError): void {
    if (this.state > RUNNING) return;
    this.interrupted = true;
    this.result = error;
    this.forget();
    this.settle(error, true);
  }

  // A wait is also a tiny hand-written generator, so that it can go wherever
  // a coroutine can (`yield*`, `loop.run`): while it has not finished, its
  // `next()` hands the wait itself to the loop, which waits on it; once it
  // has, `next()` returns its value (a permit, say), which is what `yield*`
  // gives, or throws its error.
  next(): IteratorResult<Wait, unknown> {
    if (this.state === FAILED) throw this.result;
    return this.state === RETURNED ? { value: this.result, done: true } : { value: this, done: false };
  }
  throw(error: unknown): never { throw error; }
  [Symbol.iterator](): this { return this; }
}

// A wait on `source`, typed as the coroutine it stands for.
const waitOn = <T = void>(source: Source, ms: number): Coro<T> => new Wait(source, ms) as unknown as Coro<T>;

// A shielded wait is one that a crash or a timeout does not cut short: it
// is how a thread call gives its thread the grace period, and how `isolate`
// waits for its nested loop to finish cancelling.
class Shielded extends Wait {}
const shielded = (source: Source, ms: number): Coro<void> => new Shielded(source, ms) as unknown as Coro<void>;

// A sleep is a wait that nothing fires, so that only its deadline ends it.
const never: Source = { add() {}, drop() {} };

// The timer heap: a binary min-heap of timers by deadline, so the soonest is
// always at index 0, and adding or removing one costs O(log n). A timer is
// a wait's place in the heap. When the wait ends early (its event was set),
// its timer lets go of it, but stays in the heap until it reaches the top,
// where the loop throws it away: cheaper than searching for it. So a wait
// that finished early holds nothing (its value, its task) meanwhile. (So
// that a million such timers cannot pile up, the loop sweeps them out
// whenever the heap has doubled; see `addTimer`.)
type Timer = { deadline: number; wait: Wait | null };

function heapPush(heap: Timer[], timer: Timer): void {
  let i = heap.push(timer) - 1; // a hole at the bottom, which rises past later deadlines
  for (let parent = (i - 1) >> 1; i > 0 && heap[parent]!.deadline > timer.deadline; i = parent, parent = (i - 1) >> 1) heap[i] = heap[parent]!;
  heap[i] = timer;
}

function heapPop(heap: Timer[]): Timer {
  const top = heap[0]!;
  const last = heap.pop()!; // moves into the hole at the top, then sinks
  let i = 0;
  for (let child = 1; child < heap.length; i = child, child = 2 * i + 1) {
    if (child + 1 < heap.length && heap[child + 1]!.deadline < heap[child]!.deadline) child++;
    if (heap[child]!.deadline >= last.deadline) break;
    heap[i] = heap[child]!;
  }
  if (heap.length > 0) heap[i] = last;
  return top;
}

// Events
// ------

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
  waits: Set<Wait> = new Set();

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
  }

  /**
   * Lowers the flag. Coroutines already woken by `set()` stay woken, even if
   * they have not run yet.
   */
  clear(): void { this.#flag = false; }

  /**
   * A coroutine that finishes when the flag is set, or when `timeoutMs`
   * have passed, whichever is first. Check `isSet()` afterwards to tell
   * which. Like any coroutine, a wait may be yielded from several places,
   * and yielded again once it has finished (it gives the same outcome).
   * @param timeoutMs optional; a non-negative number of milliseconds.
   */
  wait(timeoutMs?: number): Coro<void> {
    return waitOn(this, timeoutMs === undefined ? Infinity : checkMs(timeoutMs, "event.wait(timeoutMs)"));
  }

  /** @internal */ add(wait: Wait): void { this.#flag ? wait.fire() : this.waits.add(wait); }
  /** @internal */ drop(wait: Wait): void { this.waits.delete(wait); }
}

// Why does a wait that fired stay fired, even if the event is cleared
// before the coroutine runs? Because `set(); clear();` is a pulse that says
// "it happened": a coroutine that was waiting for it must hear of it. And a
// wait that timed out stays timed out, even if the event is set a moment
// later: the coroutine has been told "time is up" and must not be told
// twice. Either way, a `Wait` fires once.

// The loop
// --------
//
// The loop's state is three pieces: `queue`, the tasks ready to run, in
// order; the live tasks, every task started on it and not yet finished;
// and `timers`, the heap above. Everything else is on the task records.
// The live tasks are a list linked through the tasks themselves (`older`,
// `newer`), oldest first: starting or finishing one is a few pointer
// writes, where a `Set` of 100,000 tasks took half of the time it takes to
// wake and finish them all. The loop walks the list only when it crashes,
// and when it closes what it abandons.

const DEADLOCK = "Deadlock: every coroutine is waiting, and no timer or thread can wake any of them (are they waiting on an Event that nothing will set?). All coroutines have been cancelled.";

// The loop whose coroutines are being stepped right now (`timeout`,
// `isolate` and `fromPromise` need it), and the wake word's value when
// threads were last polled.
let current: Loop | null = null;
let polledAt = -1;

// A busy loop hands control back to its driver at least every SLICE_MS, so
// that a loop under `toPromise` lets Node's own event loop run, and a loop
// nested in `isolate` lets the outer loop's coroutines run.
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
  /** @internal How many tasks are live; the oldest and the newest of them. */
  live = 0;
  /** @internal */ oldest: Task | null = null;
  /** @internal */ newest: Task | null = null;
  /** @internal */ timers: Timer[] = [];
  /** @internal The error that crashed the run, then the errors raised while cancelling, and the CancelledError each task was given. */
  crash: { error: unknown; errors: unknown[]; cancelled: Map<Task, CancelledError> } | null = null;
  /** @internal The wake word's value when the loop last looked for work. */
  seen = 0;
  /** @internal Whether the thread blocks while we wait (the synchronous `run`). */
  blocking = true;
  /** @internal Whether someone else needs turns while we are busy: Node's event loop (under `toPromise`), an outer loop (under `isolate`). */
  sharing = false;
  /** @internal Set by `isolate` while this nested loop has nothing to do. */
  parked: Event | null = null;
  #running = false;
  #sweepAt = 64;

  /**
   * Runs `coro` and every coroutine it starts until all have finished, and
   * returns what `coro` returned. Blocks the calling thread while it waits
   * (for a timer or a thread), without polling. If a coroutine throws, all
   * others are cancelled and the error is thrown here.
   * @param coro a generator object (call your generator function).
   * @param options see {@link RunOptions}.
   */
  run<R>(coro: Coro<R>, options?: RunOptions | null): R {
    // The stepping core (`#runtime`, below) runs coroutines while any can
    // run, and then yields how long we may sleep: we sleep in `Atomics.wait`
    // until then, or until the wake word moves.
    const runtime = this.start(coro, options, true, "Loop.run");
    for (let step = runtime.next(); ; ) {
      if (step.done) return step.value;
      // Nothing to run, no timer, no thread at work: nothing can wake us.
      const stuck = step.value === Infinity && busy.size === 0;
      if (!stuck && step.value > 0) Atomics.wait(wake, 0, this.seen, step.value);
      step = stuck ? runtime.throw(new Error(DEADLOCK)) : runtime.next();
    }
  }

  /** @internal Checks the arguments, then hands back the stepping core. */
  start(coro: Coro, options: RunOptions | null | undefined, blocking: boolean, who: string): Generator<number, any, void> {
    mustBeCoro(coro, `${who}(coro)`);
    if (this.#running) throw new Error("This loop is currently running: a coroutine cannot run the loop it runs on. To wait for a coroutine, yield it; to run a separate loop inside a coroutine, make a new Loop().");
    const root = recordFor(coro, this); // (if it finished already, we give its outcome)
    if (root.state === RUNNING) throw new Error(ELSEWHERE);
    this.#running = true;
    this.blocking = blocking;
    this.sharing = who !== "Loop.run";
    return this.#runtime(root, options ?? {});
  }

  // One core, three drivers. The stepping core is itself a generator: it
  // runs coroutines while any is runnable, and when none is, it yields how
  // long it may sleep (Infinity: until woken; 0: "still busy, but your turn
  // now"). Whoever drives it decides how to sleep: `run` blocks the thread
  // with `Atomics.wait`; `toPromise` awaits, so Node's own event loop runs
  // meanwhile; `isolate` waits as a coroutine of an outer loop. A driver
  // reports trouble (a deadlock, an aborted signal) by throwing it in at
  // that `yield`, where it crashes the loop like a coroutine's error.
  *#runtime(root: Task, options: RunOptions): Generator<number, any, void> {
    const outer = current;
    if (root.state === NEW) this.begin(root);
    try {
      let sliceStart = performance.now();
      let budget = 1;
      while (this.live > 0) {
        current = this;
        this.#collectWakeUps();
        // Run the queue in order. Tasks woken meanwhile join a fresh queue, so
        // each runs at most once per round. We read the clock after every step
        // when someone else waits for a turn (every 1,000 under the plain
        // synchronous `run`, where a reading costs about as much as a step).
        const batch = this.queue;
        this.queue = [];
        let i = 0;
        let breathe = false;
        while (i < batch.length && !breathe) {
          this.#step(batch[i++]!);
          if (--budget > 0) continue;
          budget = this.sharing ? 1 : 1000;
          breathe = performance.now() - sliceStart >= SLICE_MS;
        }
        if (i < batch.length) this.queue = batch.slice(i).concat(this.queue);
        current = outer;
        if (this.live === 0) break;
        const ms = this.queue.length > 0 ? 0 : this.#sleepTime();
        if (ms === 0 && !breathe) continue;
        try { yield ms; } catch (error) { this.#crash(error); } // (trouble reported by the driver)
        sliceStart = performance.now();
      }
      return this.#outcome(root, options);
    } finally {
      current = outer;
      // Closed early by its driver (`isolate`'s own coroutine was closed):
      // close every coroutine we would otherwise abandon.
      for (let task = this.oldest; task !== null; task = this.oldest) {
        stopWaiting(task, itemsOf(task.waitingOn));
        task.waitingOn = undefined;
        this.#close(task);
        this.#finish(task, new CancelledError("Closed, with the loop that ran it."), true);
      }
      this.queue = [];
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
    if (this.seen !== polledAt && threads.size > 0) {
      polledAt = this.seen;
      pollThreads();
    }
    const now = this.timers.length > 0 ? performance.now() : 0;
    while (this.timers.length > 0 && this.timers[0]!.deadline <= now) heapPop(this.timers).wait?.timeUp();
  }

  // How long the driver may sleep: until the soonest timer that still
  // matters (timers of waits that ended early are thrown away). Like
  // libuv, we sleep in whole milliseconds, so that timers due within the
  // same millisecond fire in one wake-up rather than one wake-up each.
  #sleepTime(): number {
    while (this.timers.length > 0 && this.timers[0]!.wait === null) heapPop(this.timers);
    if (this.timers.length === 0) return Infinity;
    const left = this.timers[0]!.deadline - performance.now();
    return left > 0 ? Math.ceil(left) : 0;
  }

  /** @internal Gives a timed wait its timer; sweeps out spent timers whenever the heap has doubled. */
  addTimer(wait: Wait): void {
    if (this.timers.length >= this.#sweepAt) {
      // (A sorted array is a valid heap.)
      this.timers = this.timers.filter((timer) => timer.wait !== null).sort((a, b) => a.deadline - b.deadline);
      this.#sweepAt = 2 * this.timers.length + 64;
    }
    heapPush(this.timers, (wait.timer = { deadline: wait.deadline, wait }));
  }

  /**
   * @internal Queues a task whose count reached zero. Woken from outside
   * its own steps (a promise callback, a Node timer, another loop on this
   * thread), the loop may be asleep: then we notify its wake word.
   */
  wake(task: Task): void {
    this.queue.push(task);
    this.parked?.set();
    if (current !== this) notify();
  }

  /** @internal Starts a task that is new here. */
  begin(task: Task): Task {
    task.state = RUNNING;
    task.loop = this;
    task.older = this.newest;
    if (this.newest === null) this.oldest = task;
    else this.newest.newer = task;
    this.newest = task;
    this.live++;
    this.queue.push(task);
    return task;
  }

  // One step: resume the task with its value (or throw its error in), then
  // look at what it did. It may have returned, thrown, or yielded again.
  //
  // This is the one door to user code: every call into a coroutine, and
  // every read of what it gave back, happens inside a `try` here or in
  // `#schedule`. Whatever fails there is that coroutine's error; the loop's
  // own state never sees a half-done step.
  #step(task: Task): void {
    let done: unknown, value: unknown, cancelled: CancelledError | undefined, swallowed: boolean;
    try {
      const out = this.#resume(task);
      if (typeof out !== "object" || out === null) throw new TypeError(`A tinyio coroutine's next() or throw() returned ${describe(out)}, not an iterator result ({ value, done }). Is it a real generator?`);
      ({ done, value } = out);
      // Once cancelled, a task may only finish, or wait on a shielded wait.
      cancelled = this.crash?.cancelled.get(task);
      swallowed = cancelled !== undefined && (Boolean(done) || !(value instanceof Shielded));
    } catch (error) {
      return this.#finish(task, error, true);
    }
    if (swallowed) {
      const closed = done ? "" : this.#close(task) ? ", and has closed it with return() so that its remaining finally blocks ran" : ", and could not close it: it yielded again each time return() was called";
      process.emitWarning(`A tinyio coroutine was cancelled, and ${done ? "returned" : "yielded"} ${describe(value)} instead of letting its CancelledError propagate. A cancelled coroutine may clean up, but not wait again; the loop does not resume it${closed}.`, "TinyioWarning");
      this.#finish(task, cancelled, true);
    } else if (done) this.#finish(task, value, false);
    else this.#schedule(task, value);
    if (task.deferred !== null) this.timeOut(task, task.deferred);
  }

  #resume(task: Task): IteratorResult<unknown> {
    task.stepped = true;
    const { waitingOn } = task;
    task.waitingOn = undefined;
    let { error } = task;
    let value: unknown;
    task.error = NONE;
    if (this.crash !== null && !this.crash.cancelled.has(task)) {
      const cancelled = new CancelledError("Cancelled, because another coroutine of the loop failed.");
      this.crash.cancelled.set(task, cancelled);
      error = cancelled;
    } else if (error === NONE && waitingOn !== undefined) {
      try {
        value = Array.isArray(waitingOn) ? waitingOn.map(valueOf) : valueOf(waitingOn);
      } catch (failure) {
        error = failure; // a coroutine it waited on timed out, or failed in an earlier run
      }
    }
    // Each wait learns whether its value was taken (see `Wait.leave`).
    if (waitingOn instanceof Wait) waitingOn.leave(error === NONE);
    else if (Array.isArray(waitingOn)) for (const item of waitingOn) if (item instanceof Wait) item.leave(error === NONE);
    return error === NONE ? task.coro.next(value) : task.coro.throw(error);
  }

  // The heart of the loop: what did the coroutine yield? We read all of it
  // first, through the door (user objects may throw, even for `instanceof`):
  // `#read` turns each item into a record of ours, and from then on we touch
  // only those. A coroutine new here gets a record in state NEW, started
  // only once the whole yield made sense, and forgotten again if it did not:
  // a mistake halfway through a gather leaves nothing half started.
  #schedule(task: Task, yielded: unknown): void {
    // `yield;` goes to the back of the queue, so that the others run first.
    if (yielded === undefined) return void this.queue.push(task);
    const items: (Task | Wait)[] = [];
    let gather = false;
    let background = false;
    let error: Error | null;
    try {
      gather = Array.isArray(yielded);
      background = !gather && yielded instanceof Set;
      error = this.#read(task, yielded, gather || background ? Array.from(yielded as Iterable<unknown>) : [yielded], background, items);
    } catch (failure) {
      error = new TypeError(`A tinyio coroutine yielded an object that the loop cannot inspect (reading it threw ${describe(failure)}).`, { cause: failure });
    }
    if (error !== null) {
      // A mistake is thrown in at that `yield`, next turn. (Records made
      // meanwhile stay NEW, started only if yielded again.)
      task.error = error;
      return void this.queue.push(task);
    }
    // `yield new Set([...])` starts what is new, and goes on at once.
    if (background) {
      for (const item of items) if (item instanceof Task && item.state === NEW) this.begin(item);
      return void this.queue.push(task);
    }
    // Otherwise it waits. The count starts one too high, so that it cannot
    // reach zero while we are still registering; the last line takes the
    // extra one away. (This is also how `yield []` and already-finished
    // coroutines resume at once.)
    task.count = items.length + 1;
    for (const item of items) {
      if (item.state === RETURNED || item.state === FAILED) {
        if (item instanceof Wait) item.claims++; // (one more to resume, for `leave`)
        task.count--; // finished: its outcome is stored
        continue;
      }
      item.addWaiter(task);
      // New: start it (a wait asks its source, which may fire it at once).
      if (item.state === NEW) item instanceof Task ? this.begin(item) : item.register(this);
    }
    task.waitingOn = gather ? items : items[0];
    task.countDown();
  }

  // Checks each yielded item, and puts its record into `items`: a wait, or
  // the task of a coroutine (made here, in state NEW, if the coroutine is
  // new; a wait in a Set gets a task too, so that `run` waits for it).
  // Returns an error for a mistake, to be thrown in at the `yield`, so that
  // anything thrown out of here is a user object's own failure.
  #read(task: Task, yielded: unknown, list: unknown[], background: boolean, items: (Task | Wait)[]): Error | null {
    for (const item of list) {
      if (whyNotACoro(item) !== null) return invalidYield(yielded, list);
      let dep = item instanceof Wait && !background ? item : taskOf(item as Coro);
      if (dep instanceof Wait && dep.source.exclusive && dep.state !== NEW) return new TypeError(TAKEN);
      // (Yielding a timeout is waiting on what it bounds: that is what we
      // check, after finding its record, here inside the door.)
      let target: Awaitable | undefined = dep;
      while (target instanceof Timeout) {
        const { coro } = target;
        target = target.inner ??= coro instanceof Wait ? coro : recordFor(coro, this);
        if (target instanceof Wait && target.source.exclusive && target.state !== NEW && dep?.state === NEW) return new TypeError(TAKEN);
      }
      if (target?.state === RUNNING && (target as Task | Wait).loop !== this) return new Error(ELSEWHERE);
      if (target instanceof Task && target.state === RUNNING && !background && closesCycle(task, target)) return new Error("Cycle detected: a coroutine waits on itself, through the coroutines it waits on. The loop cannot finish it.");
      items.push(dep ?? recordFor(item as Coro, this));
    }
    return null;
  }

  /**
   * @internal `timeout` interrupts a task: the TimeoutError is thrown in at
   * its `yield`, whatever it waits on. It stops waiting (what it waited on
   * forgets it), unless it is in a shielded wait, which it finishes first.
   */
  timeOut(task: Task, error: TimeoutError): void {
    // (Before its first step, or with a mistake on its way in, a task gets
    // the TimeoutError after its next step.)
    task.deferred = task.stepped && task.error === NONE ? null : error;
    if (task.state !== RUNNING || task.deferred !== null) return;
    task.interrupted = true;
    task.error = error;
    if (task.waitingOn instanceof Shielded) return;
    // It leaves what it waits on (a wait left with nobody waiting ends); but
    // a timeout it waits on is interrupted instead, and waited for: it ends
    // once what it bounds has, so nested timeouts each keep their bound.
    const timeouts = itemsOf(task.waitingOn).filter((item) => item instanceof Timeout && item.state === RUNNING);
    stopWaiting(task, itemsOf(task.waitingOn).filter((item) => !timeouts.includes(item)));
    task.waitingOn = timeouts.length > 0 ? timeouts : undefined;
    if (task.count === 0) return; // (queued already)
    task.count = timeouts.length + 1; // (one too high while we interrupt, as in `#schedule`)
    for (const view of timeouts) (view as Timeout).interrupt(error);
    task.countDown();
  }

  // A task is done. Its outcome goes on its record; a failure crashes the
  // loop, unless it is a timeout (the task's outcome, for its waiters to
  // receive). Either way, everyone waiting on it is counted down.
  #finish(task: Task, result: unknown, failed: boolean): void {
    if (task.state !== RUNNING) return; // (never twice)
    const { older, newer } = task; // (it leaves the list of live tasks)
    if (older === null) this.oldest = newer;
    else older.newer = newer;
    if (newer === null) this.newest = older;
    else newer.older = older;
    task.older = task.newer = null;
    this.live--;
    if (failed && !(task.interrupted && isA(result, TimeoutError))) this.#crash(result);
    task.settle(result, failed);
  }

  // Close what we abandon. JavaScript never closes a generator that is
  // dropped (Python does, when it is collected), so we call `return()`,
  // which runs its remaining `finally` blocks, and so releases what they
  // hold: a thread call's worker and pool slot, a permit. A `finally` that
  // yields again is closed again, a few times at most. Returns whether the
  // coroutine is closed.
  #close(task: Task): boolean {
    try {
      for (let tries = 0; tries < 8; tries++) if (task.coro.return?.(undefined)?.done !== false) return true;
      return false;
    } catch (error) {
      this.#crash(error); // (an error while closing counts as one raised while cancelling)
      return true;
    }
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
  // - tasks waiting on events or timers have those waits expired early,
  //   which counts them down as if the time had come (shielded waits excepted:
  //   a task in one is cleaning up already, and gets its CancelledError when
  //   the wait ends);
  // - tasks waiting on other coroutines stay put: they are woken, and so
  //   cancelled, when those coroutines have finished being cancelled.
  //
  // So a coroutine gets its CancelledError only after everything it waits on
  // has cleaned up: in particular, after any thread it waits on has stopped.
  #crash(error: unknown): void {
    if (this.crash !== null) return void this.crash.errors.push(error);
    this.crash = { error, errors: [], cancelled: new Map() };
    for (let task = this.oldest; task !== null; task = task.newer) for (const item of itemsOf(task.waitingOn)) if (item instanceof Wait && !(item instanceof Shielded)) cancelWait(item);
  }

  // What `run` gives back. Why a lone error by default, rather than always a
  // group? Most of the time exactly one thing went wrong, and the others
  // took their cancellation cleanly; the original error, its stack intact,
  // is then the most useful thing to throw. If cleanup went wrong too, that
  // must not be hidden, so then we throw an `AggregateError`.
  #outcome(root: Task, options: RunOptions): unknown {
    if (this.crash === null) return valueOf(root);
    const { error, errors } = this.crash;
    const others = errors.filter((e) => !isA(e, CancelledError));
    const group = options.exceptionGroup;
    if (group === false || (group === undefined && others.length === 0)) throw error;
    const held = group ? errors : others;
    throw new AggregateError([error, ...held], `A tinyio coroutine failed (${describe(error)}), and ${held.length} more error(s) were raised while cancelling the others.`);
  }
}

// `task` stops waiting on `items`, for good: a wait that fired gives back
// the value it held for it, and a wait left with nobody waiting goes back
// to NEW (so that it holds no place in its source's line).
function stopWaiting(task: Task, items: Awaitable[]): void {
  for (const item of items) {
    if (item instanceof Wait && item.state !== RUNNING) item.leave(false);
    else if (item.state === RUNNING && item.dropWaiter(task) === 0 && item instanceof Wait) item.reset();
  }
}

// What a finished task or wait gives whoever waited on it.
function valueOf(item: Awaitable): unknown { if (item.state === FAILED) throw item.result; return item.result; }

// Cycles: a coroutine that yields a running one closes a cycle if that one
// already waits on it, through any chain; that is, if the yielded one is
// among those that wait, directly or not, on the yielder. So we walk up
// from the yielder along its waiters. A coroutine that nobody waits on
// costs one look, whatever it yields: N coroutines yielding one running
// coroutine that gathers N jobs cost each yielder its own few waiters. (The
// Set is also the walk's queue: its iterator visits what is added to it.)
function closesCycle(task: Task, dep: Task): boolean {
  const above = new Set<Awaitable>([task]);
  for (const waiting of above) {
    if (waiting === dep) return true;
    for (const waiter of itemsOf(waiting.waiters)) above.add(waiter);
  }
  return false;
}

// A crash ends a wait early; but a timeout ends only with what it bounds:
// when that is a coroutine, the crash cancels it, and then the timeout ends.
function cancelWait(wait: Wait): void {
  let bounded: Task | Wait = wait;
  while (bounded instanceof Timeout) bounded = bounded.inner!;
  if (bounded instanceof Wait) bounded.expire();
}

const TAKEN = "A tinyio coroutine yielded a wait that carries a value (an acquire(), a queue's get() or put(), or a timeout of one) while another coroutine waits on it, or after it gave its value. One coroutine at a time may wait on it: call acquire(), get() or put() again for another.";
const ELSEWHERE = "This coroutine is running on another tinyio loop right now, and a coroutine belongs to one loop while it runs. To hand its result to an isolated loop, wrap it: yield tinyio.copy(coro).";

// The error for a yield the loop cannot wait on, naming the item that is
// wrong, with a hint for the usual mistakes.
function invalidYield(yielded: unknown, items: unknown[]): TypeError {
  const index = items.findIndex((item) => whyNotACoro(item) !== null);
  const what = Array.isArray(yielded) || yielded instanceof Set ? `${Array.isArray(yielded) ? "an array" : "a Set"} whose item ${index} is ${describe(items[index])}` : describe(yielded);
  return new TypeError(`A tinyio coroutine yielded ${what}. A coroutine may yield nothing (\`yield;\`), a coroutine, an array of coroutines (to wait for all), a Set of coroutines (to start them in the background), or a wait such as \`event.wait()\`. ${whyNotACoro(items[index])}`.trimEnd());
}

// Why `value` is not a coroutine (null if it is one). Duck typing, as
// elsewhere in JavaScript: a coroutine is anything with `next` and `throw`,
// except an async generator, which has them too.
function whyNotACoro(value: unknown): string | null {
  if (value instanceof Wait) return null;
  if (isPromise(value)) return "Wait for a promise with `yield tinyio.fromPromise(promise)`, in a loop run by `tinyio.toPromise(...)`: under the synchronous `Loop.run`, which blocks the thread, no promise can settle.";
  const v = value as Coro;
  if (typeof v?.next !== "function") return typeof value === "function" ? "Did you forget to call it (`yield work()` rather than `yield work`)?" : "";
  if (Symbol.asyncIterator in v) return "An async generator (`async function*`) is not a tinyio coroutine: drop the `async`, and wait for promises with `yield tinyio.fromPromise(...)`.";
  return typeof v.throw === "function" ? null : "It has next() but no throw(), so it is not a generator.";
}

function mustBeCoro(value: unknown, where: string): void {
  let why: string | null;
  try {
    why = whyNotACoro(value);
  } catch (error) {
    why = `Reading it threw ${describe(error)}.`;
  }
  if (why !== null) throw new TypeError(`${where} needs a coroutine (a generator object), but got ${describe(value)}. ${why || "Did you forget to call the generator function: main() rather than main?"}`);
}

// What a value is, in words, for error messages. Never throws, whatever
// the value (a revoked proxy, a getter that throws, no prototype).
function describe(value: unknown): string {
  try {
    if (value instanceof Wait) return "an event wait (`event.wait()`, `sleep()` or `acquire()`)";
    if (isPromise(value)) return "a Promise";
    if (typeof (value as Coro)?.next === "function") return Symbol.asyncIterator in (value as object) ? "an async generator" : "a coroutine";
    if (typeof value === "function") return `the function ${value.name.trim() || "(anonymous)"}`;
    if (value instanceof Error) return `${value.name}: ${value.message}`;
    if (typeof value === "object" && value !== null) return `an object (${Object.getPrototypeOf(value)?.constructor?.name ?? "with no prototype"})`;
    return typeof value === "string" ? `the string ${JSON.stringify(value)}` : `the ${typeof value} ${String(value)}`.replace(/^the (undefined|object) /, "");
  } catch (error) {
    return `an object that cannot be inspected (${error instanceof Error ? error.message : "reading it threw"})`;
  }
}

const isPromise = (value: unknown): value is PromiseLike<unknown> => typeof (value as PromiseLike<unknown>)?.then === "function";

function checkMs(ms: unknown, where: string): number {
  if (typeof ms !== "number") throw new TypeError(`${where} takes a number of milliseconds, but got ${describe(ms)}.`);
  if (!(ms >= 0)) throw new RangeError(`${where} takes a non-negative number of milliseconds, but got ${ms}.`);
  return ms;
}

function checkCount(n: unknown, where: string): number {
  if (!Number.isInteger(n) || (n as number) < 1) throw new RangeError(`${where} needs a positive integer, but got ${describe(n)}.`);
  return n as number;
}

// Time and synchronisation
// ------------------------
//
// Everything here is built on waits and a background `Set`, a few lines
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
export function sleep(ms: number): Coro<void> { return waitOn(never, checkMs(ms, "sleep(ms)")); }


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
  mustBeCoro(coro, "timeout(coro, ms)");
  return new Timeout(coro, checkMs(ms, "timeout(coro, ms)")) as unknown as Coro<[T, true] | [undefined, false]>;
}

// A timeout is a wait, and its own source: a view of what it bounds
// (`coro`, a coroutine or a wait), with a deadline of its own. Yielding it
// waits on `coro` (starting it, if new), so the loop sees that edge: a
// cycle through a timeout is found at once. When `coro` has finished, the
// timeout resumes whoever yields it with `[value, true]`; when its deadline
// comes first, it interrupts `coro` (see `interrupt`), and once `coro` has
// finished, cleanup included, gives `[undefined, false]`. So a permit of `timeout(sem.acquire(), ms)`
// goes straight to the coroutine that yields the timeout, with no coroutine
// in between to lose it; and two timeouts of one coroutine see one outcome.
class Timeout extends Wait implements Source {
  coro: Coro;
  inner: Task | Wait | null = null; // (the record of `coro`, found when the timeout is yielded: see `#read`)
  ms: number;
  exclusive: boolean; // (as what it bounds is)
  constructor(coro: Coro, ms: number) {
    super(never, ms);
    this.source = this; // (it is its own source)
    this.coro = coro;
    this.ms = ms;
    this.exclusive = coro instanceof Wait && coro.source.exclusive === true;
  }

  // Yielded: it waits on what it bounds, starting it if new.
  add(): void {
    const inner = this.inner!;
    if (inner.state > RUNNING) return this.ready();
    inner.addWaiter(this);
    if (inner.state === NEW) inner instanceof Task ? this.loop!.begin(inner) : inner.register(this.loop!);
  }

  // What it bounds has finished (or had, when it was yielded). A coroutine
  // that answered its TimeoutError with a value did not return in time
  // either; one that failed otherwise passes its error on.
  ready(): void {
    const inner = this.inner!;
    if (this.interrupted) this.settle(this.result, true); // (an outer timeout interrupted us)
    else if (inner.state === FAILED && !timedOut(inner)) this.settle(inner.result, true);
    else this.fire(inner.state === RETURNED && !inner.interrupted ? [inner.result, true] : [undefined, false]);
  }
  override countDown(): void { this.ready(); }

  // Its value was taken, or not: so was the inner wait's. Or nobody waits
  // on it any more: then it stops waiting, too.
  taken(): void { if (this.inner instanceof Wait) this.inner.leave(true); }
  drop(): void {
    const inner = this.inner;
    if (this.state === RETURNED) return inner instanceof Wait ? inner.leave(false) : undefined;
    if (inner === null || !itemsOf(inner.waiters).includes(this)) return;
    if (inner.dropWaiter(this) === 0 && inner instanceof Wait) inner.reset();
  }

  // Its deadline passed: it interrupts what it bounds, once, and ends once
  // that has ended. Interrupted itself by an outer timeout, it passes the
  // interruption on, so nested timeouts each keep their bound.
  override timeUp(): void { if (!this.interrupted) interrupt(this.inner!, new TimeoutError(`It did not finish within ${this.ms} ms.`)); }
  override interrupt(error: TimeoutError): void {
    if (this.state !== RUNNING) return super.interrupt(error);
    this.interrupted = true;
    this.result = error;
    interrupt(this.inner!, error);
  }
}

// A timeout interrupts what it bounds: a task gets the TimeoutError thrown
// in at its `yield`; a wait ends with it.
function interrupt(record: Task | Wait, error: TimeoutError): void { record instanceof Wait ? record.interrupt(error) : record.loop.timeOut(record, error); }

// Waits for `coro` and calls `then` once it has finished. A timeout of
// `coro` is its outcome, stored on its record for whoever yields it next,
// not a failure of ours.
function* watch(coro: Coro, then = () => {}): Coro<void> {
  try {
    yield coro;
  } catch (error) {
    if (!isTimeoutOf(coro, error)) throw error;
  }
  then();
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
  // Invariant: permits are `#free` only while nobody queues for one. (The
  // line is a Set: it keeps the order waits came in, and lets one that is
  // timed out leave from anywhere at once.)
  #free: number;
  #line: Set<Wait> = new Set();
  /** @internal */ readonly exclusive = true;

  /** @param value how many may hold a permit at once: a positive integer. */
  constructor(value: number) { this.#free = checkCount(value, "new Semaphore(value)"); }

  /**
   * A wait for a permit, which resumes with it as a {@link Release}. Both
   * `yield sem.acquire()` and `yield* sem.acquire()` work, and are equally
   * safe: a permit handed to a caller that is timed out or cancelled before
   * it runs goes to the next in line.
   */
  acquire(): Coro<Release> { return waitOn(this, Infinity); }

  /** @internal */ add(wait: Wait): void {
    if (this.#free === 0) return void this.#line.add(wait);
    this.#free--;
    wait.fire(this.#permit());
  }

  // (A wait not yet fired is in the line; a fired one holds a permit.)
  /** @internal */ drop(wait: Wait): void {
    if (wait.state === RETURNED) (wait.result as Release)[Symbol.dispose]();
    else this.#line.delete(wait);
  }

  #permit(): Release { return new Permit(this); }

  /** @internal A permit came back: it goes to the next in line. */
  giveBack(): void {
    const next = first(this.#line);
    if (next === undefined) return void this.#free++;
    this.#line.delete(next);
    next.fire(this.#permit());
  }
}

// A permit knows its semaphore until it is given back. (Its methods are
// arrows, so that they work detached too, as in `stack.defer(p.release)`.)
class Permit implements Release {
  #semaphore: Semaphore | null;
  constructor(semaphore: Semaphore) { this.#semaphore = semaphore; }

  release = (): void => {
    if (this.#semaphore === null) throw new Error("This semaphore permit was released already; release each permit once.");
    const semaphore = this.#semaphore;
    this.#semaphore = null;
    semaphore.giveBack();
  };

  [Symbol.dispose] = (): void => { if (this.#semaphore !== null) this.release(); };
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
  constructor(parties: number) { this.#parties = checkCount(parties, "new Barrier(parties)"); }

  /** Waits for all parties; returns this caller's arrival index, from 0. */
  *wait(): Coro<number> {
    const index = this.#arrived++;
    if (this.#arrived >= this.#parties) this.#everyone.set();
    yield this.#everyone.wait();
    return index;
  }
}

/**
 * A first-in first-out channel between coroutines, holding at most
 * `maxsize` items. `put` waits while it is full; `get` waits while it is
 * empty, and gives `[item, true]`, or `[undefined, false]` once the queue is
 * closed and drained. One item wakes one getter; getters and putters are
 * served first come, first served. A `get` that is timed out or cancelled
 * never takes an item with it, and a `put` either delivered its item or did
 * not, in both `yield` and `yield*` forms.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * const queue = new tinyio.Queue<number>(2);
 * function* producer() { for (let i = 1; i <= 5; i++) yield queue.put(i); queue.close(); }
 * function* consumer() {
 *   let total = 0;
 *   for (;;) { const [item, ok] = yield queue.get(); if (!ok) return total; total += item; }
 * }
 * function* main() { return yield [producer(), consumer()]; }
 * console.log(new tinyio.Loop().run(main())); // [undefined, 15]
 * ```
 */
export class Queue<T> {
  // The items, the first at `#head`: taking one moves the head, not the
  // rest of the array (what was taken is cut off now and then). Getters and
  // putters wait in lines: Sets, which keep their order, and let one that
  // is timed out leave from anywhere at once.
  #items: T[] = [];
  #head = 0;
  #getters: Set<Wait> = new Set();
  #putters: Map<Wait, T> = new Map();
  #maxsize: number;
  #closed = false;
  // Items handed to a getter that has not taken them yet: the queue is not
  // drained while any is out (it may come back). Room is made at the hand-
  // over, though, so that one coroutine may gather several gets; an item
  // that comes back then may take the queue one past `maxsize`, for a while.
  #handed = 0;
  // The source of every `get()`'s wait. An item handed to a getter that then
  // does not take it comes back, to the front of the line.
  #getting: Source = {
    exclusive: true,
    add: (wait) => {
      if (this.size > 0) {
        this.#hand(wait, this.#shift());
        this.#admit();
      } else if (this.#closed && this.#handed === 0) wait.fire([undefined, false]);
      else this.#getters.add(wait);
    },
    drop: (wait) => {
      if (wait.state === RUNNING) return void this.#getters.delete(wait);
      const [item, ok] = wait.result as [T, boolean];
      if (!ok) return;
      this.#handed--;
      this.#offer(item, true);
      this.#drained();
    },
    taken: (wait) => {
      if (!(wait.result as [T, boolean])[1]) return;
      this.#handed--;
      this.#drained();
    },
  };

  /** @param maxsize how many items it may hold: a positive integer, or Infinity (the default). */
  constructor(maxsize: number = Infinity) { this.#maxsize = maxsize === Infinity ? maxsize : checkCount(maxsize, "new Queue(maxsize)"); }

  /** How many items it holds (an item handed straight to a waiting getter never counts). */
  get size(): number { return this.#items.length - this.#head; }

  /** Waits for an item: `[item, true]`, or `[undefined, false]` once the queue is closed and empty. */
  get(): Coro<[T, true] | [undefined, false]> { return waitOn(this.#getting, Infinity); }

  /** Waits for room, and adds `item`. After `close()`, an `Error` (and the item is not added). */
  put(item: T): Coro<void> {
    return waitOn({
      exclusive: true,
      add: (wait) => {
        if (this.#closed) wait.settle(new Error(CLOSED), true);
        else if (this.#getters.size === 0 && this.size >= this.#maxsize) this.#putters.set(wait, item);
        else {
          this.#offer(item, false);
          wait.fire();
        }
      },
      drop: (wait) => void this.#putters.delete(wait), // (while it waited for room: its item was never added)
    }, Infinity);
  }

  /**
   * Refuses further `put`s (a `put` still waiting for room fails too, its
   * item not added); getters get `[undefined, false]` once the items are gone.
   */
  close(): void {
    this.#closed = true;
    for (const wait of this.#putters.keys()) wait.settle(new Error(CLOSED), true);
    this.#putters.clear();
    this.#drained();
  }

  // An item goes straight to the longest-waiting getter, or into the queue:
  // at the back, or at the front if it comes back from a getter.
  #offer(item: T, front: boolean): void {
    const getter = first(this.#getters);
    if (getter !== undefined) {
      this.#getters.delete(getter);
      return this.#hand(getter, item);
    }
    if (!front) this.#items.push(item);
    else if (this.#head > 0) this.#items[--this.#head] = item;
    else this.#items.unshift(item);
  }

  #hand(getter: Wait, item: T): void {
    this.#handed++;
    getter.fire([item, true]);
  }

  #shift(): T {
    const item = this.#items[this.#head]!;
    this.#items[this.#head++] = undefined as T; // (so that the array holds nothing it gave away)
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }

  // An item was handed out, which makes room: the first putter's item goes in.
  #admit(): void {
    const putter = first(this.#putters);
    if (putter === undefined || this.size >= this.#maxsize) return;
    this.#offer(this.#putters.get(putter)!, false);
    this.#putters.delete(putter);
    putter.fire();
  }

  // Closed, empty, and no item out with a getter: every getter is told so.
  #drained(): void {
    if (!this.#closed || this.size > 0 || this.#handed > 0) return;
    for (const getter of this.#getters) getter.fire([undefined, false]);
    this.#getters.clear();
  }
}

const CLOSED = "This queue is closed: put() after close(), or a put() still waiting for room when close() was called, does not add its item.";

// The first key of a Set or Map, in the order things were added: a line's head.
const first = <T>(line: { keys(): Iterator<T> }): T | undefined => line.keys().next().value;

/**
 * Starts `coros` in the background, and returns one coroutine per input:
 * yielding the first gives the first result to arrive, and so on (or the
 * `TimeoutError` of an input that timed out).
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
  if (!(coros instanceof Set || Array.isArray(coros))) throw new TypeError(`asCompleted(coros) needs a Set or an array of coroutines, but got ${describe(coros)}.`);
  const list = [...coros];
  list.forEach((coro, i) => mustBeCoro(coro, `asCompleted(coros), item ${i}:`));
  return asCompletedCoro(list);
}

// The k-th coroutine to finish goes into `order[k]` and sets `arrived[k]`;
// the k-th coroutine we hand out waits for that, then yields it, and the
// loop gives its stored outcome.
function* asCompletedCoro<T>(coros: Coro<T>[]): Coro<Iterable<Coro<T>>> {
  const order: Coro<T>[] = [];
  const arrived = coros.map(() => new Event());
  yield new Set(coros.map((coro) => watch(coro, () => arrived[order.push(coro) - 1]!.set())));
  return arrived.map((event, k) => replay(event, () => order[k]!));
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
export function all<const T extends readonly Coro[]>(coros: T): Coro<{ -readonly [K in keyof T]: T[K] extends Coro<infer R> ? R : never }> {
  if (!Array.isArray(coros)) throw new TypeError(`all(coros) needs an array of coroutines, but got ${describe(coros)}.`);
  return (function* () { return yield coros; })();
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
// Before it starts a call, it writes the call's number into `picked`, a
// word of shared memory, so that we can tell a call that a dying worker had
// taken from one it never received.
//
// What the function prints is written straight to the process's stdout and
// stderr, so that it comes out at once and in order, even while the main
// thread blocks (a worker's own streams would wait for the main thread's
// event loop to turn). `__name`, `__using` and `__callDispose` are small
// versions of the helpers that tsx (esbuild) puts into compiled functions
// that name a function or class, or use `using`.
const WORKER_SOURCE = `(() => { // (a function scope, so that these names stay hidden from fn)
// (Started under --input-type=module, from NODE_OPTIONS say, this runs as an ES module, with no require.)
const load = typeof require === "function" ? require : process.getBuiltinModule;
const { workerData: { wake, port, picked } } = load("node:worker_threads");
const { writeSync } = load("node:fs");
globalThis.require ??= typeof require === "function" ? require : load("node:module").createRequire(process.cwd() + "/"); // (fn may need it)
const nap = new Int32Array(new SharedArrayBuffer(4));
const writeAll = (fd, bytes) => { for (let at = 0; at < bytes.length; ) try { at += writeSync(fd, bytes, at); } catch (e) { if (e.code !== "EAGAIN") throw e; Atomics.wait(nap, 0, 0, 1); } };
for (const [stream, fd] of [[process.stdout, 1], [process.stderr, 2]]) stream.write = (chunk, encoding, done) => (writeAll(fd, Buffer.from(chunk, typeof encoding === "string" ? encoding : undefined)), [encoding, done].find((f) => typeof f === "function")?.(), true);
const __name = (fn, name) => Object.defineProperty(fn, "name", { value: name, configurable: true });
const __using = (stack, value, async) => (value != null && stack.push([async, (async && value[Symbol.asyncDispose]) || value[Symbol.dispose], value]), value);
const __callDispose = (stack, error, hasError) => {
  const fail = (e) => { error = hasError ? Object.assign(new Error("An error was suppressed during disposal."), { name: "SuppressedError", error: e, suppressed: error }) : e; hasError = true; };
  const next = () => { for (let entry; (entry = stack.pop()); ) try { const result = entry[1]?.call(entry[2]); if (entry[0]) return Promise.resolve(result).then(next, (e) => (fail(e), next())); } catch (e) { fail(e); } if (hasError) throw error; };
  return next();
};
class CancelledError extends Error { name = "CancelledError"; }
const compiled = new Map();
let controller, running = false, fatal;
const describe = (e) => e instanceof Error ? { name: e.name, message: e.message, stack: e.stack, cause: e.cause, props: { ...e } } : { name: "Error", message: "The thread threw a non-error: " + String(e), stack: "" };
function answer(message) {
  try { port.postMessage(message); }
  catch (e) { // (something in it cannot be cloned: an error goes back without its cause and properties)
    const { name, message: text, stack } = message.error ?? { ...describe(e), message: "The thread's result cannot be sent back (structured clone refused it): " + e.message };
    port.postMessage({ error: { name, message: text, stack } });
  }
  Atomics.add(wake, 0, 1);
  Atomics.notify(wake, 0);
}
// Node does not run \`--import\` modules in a worker made from source text. For a fn that calls import(), we load
// them first, once (it costs time: tsx's loader registers its hooks on the main thread only, and here we ask its API
// to, so that fn may import the project's .ts modules).
const imports = process.execArgv.flatMap((flag, i, all) => (flag === "--import" ? [all[i + 1]] : flag.startsWith("--import=") ? [flag.slice(9)] : []));
const tsx = (module) => (module === "tsx" ? "tsx/esm/api" : /\\/tsx\\/dist\\/loader\\.mjs$/.test(module) ? new URL("esm/api/index.mjs", module).href : null);
let loaded;
const loadImports = () => (loaded ??= Promise.all(imports.map((module) => (tsx(module) ? import(tsx(module)).then((api) => api.register()) : import(module)))));
port.on("message", async ({ source, args, seq, abort }) => {
  if (abort) return controller.abort(new CancelledError("Cancelled by the tinyio loop."));
  Atomics.store(picked, 0, seq);
  running = true;
  const { signal } = (controller = new AbortController());
  try {
    if (source.includes("import(")) await loadImports();
    let fn = compiled.get(source);
    try { fn ??= new Function("__name", "__using", "__callDispose", "return (" + source + "\\n);")(__name, __using, __callDispose); }
    catch (e) { throw new TypeError("runInThread cannot compile fn from its source text (" + e.message + "): pass a function or an arrow function; a method written in shorthand cannot travel."); }
    compiled.set(source, fn);
    answer({ value: await fn.apply({ signal }, args) });
  } catch (e) {
    // Settled by honouring the signal (its reason, or the AbortError that Node's own APIs give): a clean stop.
    answer(signal.aborted && (e === signal.reason || e?.name === "AbortError") ? { cancelled: true } : { error: describe(e) });
  }
  running = false;
});
process.on("uncaughtException", (e) => {
  fatal = e;
  if (!running) writeSync(2, "tinyio: a worker thread died of an error thrown outside any call; it will not be reused.\\n" + (e?.stack ?? String(e)) + "\\n");
  process.exit(1);
});
process.on("exit", (code) => running && answer({ exit: code, error: fatal && describe(fatal) }));
})();`;

// How does the loop learn that a worker died, when it died of something
// that runs none of its own code (out of memory, say), and the main thread
// is blocked in `Atomics.wait`, deaf to Node's `exit` event? Every worker
// holds one end of a "lifeline" channel, and a supervisor holds the other:
// a tiny thread whose event loop is always free. When a worker dies, for
// any reason, its end closes, and the supervisor reports the worker's id
// and notifies the wake word. (Calls still go straight to each worker, and
// workers start as fast as ever: the supervisor only listens.)
//
// Deno closes no channel when a worker dies. There the supervisor starts
// the workers itself (so that it hears their `exit` event) and stops them
// when asked; a first call then waits for two threads to start, not one.
// It gives them a heap limit, the one it has: without one, a worker that
// runs out of memory aborts the whole process on Deno.
const SUPERVISOR_SOURCE = `const load = typeof require === "function" ? require : process.getBuiltinModule;
const { Worker, workerData: { wake, deaths }, parentPort } = load("node:worker_threads");
const report = (id) => { deaths.postMessage(id); Atomics.add(wake, 0, 1); Atomics.notify(wake, 0); };
const workers = new Map();
parentPort.on("message", ({ id, lifeline, start, stop }) => {
  if (lifeline) return lifeline.on("close", () => report(id));
  if (stop) return void workers.get(id)?.terminate();
  const resourceLimits = { maxOldGenerationSizeMb: Math.floor(load("node:v8").getHeapStatistics().heap_size_limit / 2 ** 20) };
  workers.set(id, new Worker(start.source, { ...start.options, resourceLimits }).on("error", () => {}).on("exit", () => (workers.delete(id), report(id))));
});`;
const SPAWN_IN_SUPERVISOR = "Deno" in globalThis;

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

type Answer = { value?: unknown; error?: { name: string; message: string; stack: string; cause?: unknown; props?: object }; cancelled?: true; exit?: number; died?: true; retry?: true };
const threads = new Map<number, Thread>(); // every worker not yet reported dead, by id
let supervisor: { worker: Worker; deaths: MessagePort } | undefined;
let lastId = 0;

// The main side of a worker. It runs one call at a time (numbered `seq`),
// and is the source of the waits for that call's answer (see `Source`):
// `pollThreads` reads the answer, and fires the wait with it.
class Thread implements Source {
  id = ++lastId;
  worker: Worker | null = null; // (null where the supervisor started it)
  port: MessagePort;
  picked = new Int32Array(new SharedArrayBuffer(4));
  seq = 0;
  answer: Answer | undefined = undefined;
  wait: Wait | null = null;
  dead = false;
  idleSince = 0;
  constructor() {
    if (supervisor === undefined) {
      const { port1, port2 } = new MessageChannel();
      supervisor = { worker: new Worker(SUPERVISOR_SOURCE, { eval: true, execArgv: [], workerData: { wake, deaths: port2 }, transferList: [port2] }), deaths: port1 };
      supervisor.worker.unref();
    }
    const { port1, port2 } = new MessageChannel();
    const workerData = { wake, port: port2, picked: this.picked };
    this.port = port1;
    threads.set(this.id, this);
    if (SPAWN_IN_SUPERVISOR) {
      const options = { eval: true, workerData, transferList: [port2] };
      supervisor.worker.postMessage({ id: this.id, start: { source: WORKER_SOURCE, options } }, [port2]);
    } else {
      const lifeline = new MessageChannel();
      this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { ...workerData, lifeline: lifeline.port2 }, transferList: [port2, lifeline.port2] });
      this.worker.on("error", () => {}).unref(); // (its death reaches us through the lifeline)
      supervisor.worker.postMessage({ id: this.id, lifeline: lifeline.port1 }, [lifeline.port1]);
    }
  }

  // Stops its worker; the supervisor then reports it dead.
  stop(): void {
    this.dead = true;
    if (this.worker === null) supervisor!.worker.postMessage({ id: this.id, stop: true });
    else void this.worker.terminate();
  }

  add(wait: Wait): void { this.answer === undefined ? (this.wait = wait) : wait.fire(this.answer); }
  drop(wait: Wait): void { if (this.wait === wait) this.wait = null; }
  answered(answer: Answer): void { busy.delete(this); this.answer = answer; this.wait?.fire(answer); }
}

// The loop calls this whenever the wake word has moved while calls are out:
// read the answers, then the deaths. A worker that died with a call out had
// answered it just before, or had taken it (the call then fails), or never
// received it: then it is posted again, to another worker.
function pollThreads(): void {
  for (const thread of busy) {
    const received = receiveMessageOnPort(thread.port);
    if (received !== undefined) thread.answered(received.message as Answer);
  }
  for (let death; (death = receiveMessageOnPort(supervisor!.deaths)) !== undefined; ) {
    const thread = threads.get(death.message as number)!;
    threads.delete(thread.id);
    thread.dead = true;
    const last = receiveMessageOnPort(thread.port)?.message as Answer | undefined;
    if (busy.has(thread)) thread.answered(last ?? (Atomics.load(thread.picked, 0) === thread.seq ? { died: true } : { retry: true }));
  }
}

// A call's result, or the thread's error rebuilt here, with its name,
// message, the thread's own stack, its cause and its own properties (so
// that `error.code === "ENOENT"` works as it would in the thread).
function resultOf({ value, error, exit, died }: Answer): unknown {
  if (error === undefined && exit === undefined && !died) return value;
  const lost = died ? "The thread died before it answered: it ran out of memory, or was terminated." : `The thread exited with code ${exit} before the function returned.`;
  const { name, message, stack, cause, props } = error ?? { name: "Error", message: lost, stack: "" };
  const hint = name === "ReferenceError" ? " (A function run in a thread must be self-contained: it travels as source text, so it cannot use variables from where it was written. Pass them as arguments.)" : "";
  throw Object.assign(new Error(message + hint, cause === undefined ? undefined : { cause }), props, { name, stack: stack ? stack.replace(message, message + hint) : `${name}: ${message}` });
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
  // gives back a slot whose waiter was cancelled.
  #slots: Semaphore;
  #idle: Thread[] = [];

  /** @param maxThreads how many workers may run at once: a positive integer. */
  constructor(maxThreads: number) {
    this.#slots = new Semaphore(checkCount(maxThreads, "new ThreadPool(maxThreads)"));
  }

  /** Runs `fn(...args)` on a worker of this pool; see {@link runInThread}. */
  *runInThread<A extends unknown[], R>(fn: (this: ThreadContext, ...args: A) => R, ...args: A): Coro<Awaited<R>> {
    const source = sourceOf(fn);
    const permit = yield* this.#slots.acquire();
    try {
      for (let tries = 1; ; tries++) {
        const answer = yield* call(this.#take(), source, args, this.#idle);
        if (!answer.retry) return resultOf(answer) as Awaited<R>;
        if (tries === 3) throw new Error("Three worker threads in a row died before they could take this call, so a worker cannot start here: check the flags that node runs with.");
      }
    } finally {
      permit.release();
    }
  }

  /** Runs `fn` on each of `xs` in this pool; returns the results in order. */
  *map<T, R>(fn: (this: ThreadContext, x: T) => R, xs: Iterable<T>): Coro<Awaited<R>[]> {
    return yield [...xs].map((x) => this.runInThread(fn, x));
  }

  // Workers idle for over IDLE_MS are retired as calls come, dead ones are
  // dropped, and the one idle for the shortest time is reused.
  #take(): Thread {
    while (this.#idle.length > 0 && performance.now() - this.#idle[0]!.idleSince > IDLE_MS) this.#idle.shift()!.stop();
    for (let thread; (thread = this.#idle.pop()) !== undefined; ) if (!thread.dead) return thread;
    return new Thread();
  }
}

// One call on one worker: post it, and wait for its answer. Then the worker
// goes back to `idle` if it answered normally, and is retired otherwise.
function* call(thread: Thread, source: string, args: unknown[], idle: Thread[]): Coro<Answer> {
  thread.answer = undefined;
  try {
    thread.port.postMessage({ source, args, seq: ++thread.seq });
  } catch (error) {
    idle.push(thread); // (nothing was sent: the worker is as good as before)
    throw new TypeError(`runInThread cannot send its arguments to a thread: structured clone refused them (${describe(error)}).`);
  }
  // While calls are out, the supervisor keeps Node alive (for `toPromise`),
  // even if the worker is dead and its death still on the way.
  if (busy.size === 0) supervisor!.worker.ref();
  busy.add(thread);
  try {
    return yield waitOn<Answer>(thread, Infinity);
  } catch (reason) {
    // Cancelled (or timed out) at our `yield` while the thread works: ask
    // it to stop, and give it the grace period to settle; failing that,
    // terminate its worker, and wait for the supervisor to report it dead.
    // Only then does the error go on, so whoever waits on this call knows
    // the thread has stopped. These waits are shielded: a cancelled
    // coroutine may yield them, and a crash or timeout does not cut them
    // short. A second interruption (delivered once the wait has ended) goes
    // on instead of the first, and the thread's own error before either.
    let error = reason;
    function* grace(): Coro<void> {
      try {
        yield shielded(thread, CANCEL_GRACE_MS);
      } catch (again) {
        error = again;
      }
    }
    if (busy.has(thread)) {
      thread.port.postMessage({ abort: true });
      yield* grace();
      if (thread.answer === undefined) {
        thread.stop();
        yield* grace();
      }
      const answer = thread.answer as Answer | undefined; // (set meanwhile, by `pollThreads`)
      if (answer?.error !== undefined) resultOf(answer); // the thread's own error, from its cleanup
    }
    throw error;
  } finally {
    busy.delete(thread);
    if (busy.size === 0) supervisor!.worker.unref();
    if (thread.dead || thread.answer === undefined || !("value" in thread.answer)) thread.stop();
    else {
      thread.idleSince = performance.now();
      idle.push(thread);
    }
  }
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
 * `min(32, availableParallelism() + 4)` workers. A worker that dies ends
 * its call with an error, and is never handed another.
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
export async function toPromise<R>(coro: Coro<R>, options?: (RunOptions & { signal?: AbortSignal }) | null): Promise<R> {
  const signal = options?.signal;
  const loop = new Loop();
  const runtime = loop.start(coro, options, false, "toPromise");
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

// `Atomics.waitAsync` (ES2024), typed here, so that the file compiles
// against the older `lib` of a project it is copied into, too.
type WaitAsync = (typed: Int32Array, index: number, value: number, ms: number) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync: WaitAsync = Reflect.get(Atomics, "waitAsync");

// Sleep without blocking: until the wake word moves, or `ms` pass. A pending
// `waitAsync` does not keep Node alive, so the Node timer does that while a
// deadline is pending; busy workers keep it alive while threads work. A
// Node timer waits at most about 24.8 days (2^31 - 1 ms): a longer deadline
// takes several timers, one after another.
async function idle(seen: number, ms: number): Promise<void> {
  if (ms === 0) return new Promise((resolve) => setImmediate(resolve));
  const woken = waitAsync(wake, 0, seen, ms);
  if (!woken.async) return;
  let timer: NodeJS.Timeout | undefined;
  if (ms !== Infinity) await Promise.race([woken.value, new Promise((resolve) => (timer = setTimeout(resolve, Math.min(ms, 2 ** 31 - 1))))]);
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
 * cancellation of the outer loop, or a timeout of the `isolate`, is not
 * caught: it cancels the nested loop, and is raised once that has finished.
 * @example
 * ```ts
 * import * as tinyio from "./tinyio.ts";
 * function* fails() { yield; throw new Error("oops"); }
 * function* main() { const [error, ok] = yield tinyio.isolate(fails()); return [String(error), ok]; }
 * console.log(new tinyio.Loop().run(main())); // ["Error: oops", false]
 * ```
 */
export function isolate<R>(coro: Coro<R>, options?: RunOptions | null): Coro<[R, true] | [unknown, false]> {
  const inner = new Loop();
  return isolateCoro(inner, inner.start(coro, options, true, "isolate"));
}

function* isolateCoro<R>(inner: Loop, runtime: Generator<number, R, void>): Coro<[R, true] | [unknown, false]> {
  inner.blocking = current?.blocking !== false; // (as the outer loop does)
  // What the outer loop threw in at our `yield` (its cancellation, a
  // timeout). We throw it into the nested loop once (`passOn`), wait,
  // shielded, until that loop has finished cancelling, and then raise it.
  // Anything thrown in after that changes nothing: we are stopping already.
  let interruption: unknown = NONE;
  let passOn = false;
  try {
    for (;;) {
      let step: IteratorResult<number, R>;
      try {
        step = passOn ? runtime.throw(interruption) : runtime.next();
      } catch (error) {
        if (interruption !== NONE) throw interruption;
        return [error, false]; // the nested loop crashed, and only it
      }
      passOn = false;
      if (step.done && interruption !== NONE) throw interruption;
      if (step.done) return [step.value, true];
      inner.parked = new Event();
      try {
        yield (interruption === NONE ? waitOn : shielded)(inner.parked, step.value);
      } catch (error) {
        passOn = interruption === NONE;
        if (passOn) interruption = error;
      }
    }
  } finally {
    runtime.return(undefined as R); // (if we are closed early: close the nested loop's coroutines too)
  }
}

/**
 * Schedules `coro` on this loop and returns a fresh coroutine that resolves
 * to the same result (or raises the same `TimeoutError`): the way to hand a
 * coroutine that is still running here into an {@link isolate}d loop, which
 * may not yield it directly while this loop runs it.
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
export function copy<T>(coro: Coro<T>): Coro<Coro<T>> {
  mustBeCoro(coro, "copy(coro)");
  return copyCoro(coro);
}

function* copyCoro<T>(coro: Coro<T>): Coro<Coro<T>> {
  const done = new Event();
  yield new Set([watch(coro, () => done.set())]);
  return replay(done, () => coro);
}

// Waits for `done`, then yields the coroutine that `which` names: it has
// finished by then, and the loop gives its stored outcome.
function* replay<T>(done: Event, which: () => Coro<T>): Coro<T> {
  yield done.wait();
  return yield which();
}

// You made it
// -----------
//
// That is the whole loop: one record per coroutine, one counter, one wake
// word, one stepping core and its three drivers. To see it at work, read
// examples/ in order, starting with examples/01-hello.ts; tinyio.test.ts has
// a spec for every behaviour promised here.
