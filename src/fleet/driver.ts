/** A value a query takes: what both SQLite and PostgreSQL bind the same way. */
export type Param = string | number | null;
export type Row = Record<string, unknown>;

/**
 * The little a backend must give the fleet store: queries with `?`
 * placeholders (PostgreSQL's driver numbers them), and transactions. A
 * transaction's function gets a driver bound to that transaction.
 */
export interface Driver {
  readonly dialect: "sqlite" | "postgres";
  all<T = Row>(sql: string, params?: Param[]): Promise<T[]>;
  /** Rows changed. */
  run(sql: string, params?: Param[]): Promise<number>;
  tx<T>(fn: (d: Driver) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Runs async functions one at a time, in order (a single SQLite connection's transactions). */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => {});
    return next;
  }
}
