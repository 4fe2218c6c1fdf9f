// The floor for the thread workloads: the least a worker pool can do.
//
// `size` workers at most, started on demand (as tinyio's pool does), each
// with a MessageChannel. A call posts `{ source, args }` to an idle worker
// (or queues, first come first served); the worker compiles the function
// source once (cached), runs it, and posts the result back. No
// cancellation, no error rebuilding, no grace period: just the round trip.
// The main side lives on Node's event loop (promises).

import { MessageChannel, Worker, type MessagePort } from "node:worker_threads";

// The worker's side, evaluated in each worker.
const WORKER = `
const { workerData: { port } } = require("node:worker_threads");
const compiled = new Map();
port.on("message", async ({ source, args }) => {
  try {
    let fn = compiled.get(source);
    if (fn === undefined) compiled.set(source, (fn = new Function("return (" + source + ");")()));
    port.postMessage({ value: await fn(...args) });
  } catch (e) {
    port.postMessage({ error: String(e && e.stack || e) });
  }
});
`;

type Job = { source: string; args: unknown[]; resolve: (v: unknown) => void; reject: (e: Error) => void };
type Slot = { worker: Worker; port: MessagePort; job?: Job };

export class MinimalPool {
  #size: number;
  #slots: Slot[] = [];
  #idle: Slot[] = [];
  #queue: Job[] = [];

  constructor(size: number) {
    this.#size = size;
  }

  /** Runs `fn(...args)` on a worker; `fn` travels as source text. */
  run<A extends unknown[], R>(fn: (...args: A) => R, ...args: A): Promise<Awaited<R>> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ source: fn.toString(), args, resolve: resolve as (v: unknown) => void, reject });
      this.#dispatch();
    });
  }

  // Hand queued jobs to idle workers, starting workers up to the bound.
  #dispatch(): void {
    while (this.#queue.length > 0) {
      const slot = this.#idle.pop() ?? (this.#slots.length < this.#size ? this.#spawn() : undefined);
      if (slot === undefined) return;
      const job = this.#queue.shift()!;
      slot.job = job;
      slot.port.postMessage({ source: job.source, args: job.args });
    }
  }

  #spawn(): Slot {
    const { port1, port2 } = new MessageChannel();
    const worker = new Worker(WORKER, { eval: true, workerData: { port: port2 }, transferList: [port2] });
    const slot: Slot = { worker, port: port1 };
    port1.on("message", (answer: { value?: unknown; error?: string }) => {
      const job = slot.job!;
      slot.job = undefined;
      this.#idle.push(slot);
      if (answer.error !== undefined) job.reject(new Error(answer.error));
      else job.resolve(answer.value);
      this.#dispatch();
    });
    this.#slots.push(slot);
    return slot;
  }

  async close(): Promise<void> {
    await Promise.all(this.#slots.map((slot) => slot.worker.terminate()));
  }
}
