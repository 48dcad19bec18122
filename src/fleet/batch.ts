/** A write refused because too many are waiting already: the caller answers "busy" (503). */
export class QueueFull extends Error {
  constructor(what: string, limit: number) {
    super(`${limit} ${what} waiting to be committed already`);
    this.name = "QueueFull";
  }
}

export interface BatchOptions {
  /** Items one flush takes at most. */
  maxBatch: number;
  /** Items waiting or being flushed at most; beyond, add() rejects with QueueFull at once. */
  maxPending: number;
  /** What QueueFull's message calls the items. */
  what?: string;
}

interface Waiting<T, R> {
  item: T;
  resolve: (r: R) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit. Each add() queues one item and resolves with its result only
 * once the flush that took it has finished (committed), so a caller that
 * answers after add() resolves has answered only what is on record. One
 * flush runs at a time; what arrives meanwhile waits and goes in the next
 * one, so under load the batches grow by themselves and the cost of a
 * transaction (BEGIN, COMMIT, the WAL write) is shared by many items, while
 * a lone item is flushed at once (after the current I/O callbacks: the
 * requests parsed in one turn of the event loop share a batch). A flush
 * that throws rejects every item it took: none is dropped silently. The
 * queue is bounded: a flood gets QueueFull, not memory.
 */
export class Batcher<T, R> {
  private queue: Waiting<T, R>[] = [];
  private inFlight = 0;
  private scheduled = false;
  private idle: (() => void)[] = [];

  constructor(
    private readonly flush: (items: T[]) => Promise<R[]>,
    private readonly o: BatchOptions,
  ) {}

  /** Items queued or being flushed. */
  get pending(): number {
    return this.queue.length + this.inFlight;
  }

  add(item: T): Promise<R> {
    if (this.pending >= this.o.maxPending)
      return Promise.reject(new QueueFull(this.o.what ?? "writes", this.o.maxPending));
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /** Resolves once nothing is queued or being flushed (before the store closes). */
  drained(): Promise<void> {
    if (!this.pending) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  private schedule(): void {
    if (this.inFlight || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.drain();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length) {
      const batch = this.queue.splice(0, this.o.maxBatch);
      this.inFlight = batch.length;
      try {
        const out = await this.flush(batch.map((w) => w.item));
        if (out.length !== batch.length)
          throw new Error(`a flush of ${batch.length} gave ${out.length} results`);
        for (const [i, w] of batch.entries()) w.resolve(out[i]!);
      } catch (err) {
        for (const w of batch) w.reject(err);
      } finally {
        this.inFlight = 0;
      }
    }
    for (const r of this.idle.splice(0)) r();
  }
}
