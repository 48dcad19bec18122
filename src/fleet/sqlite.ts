import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { KilnError } from "../util/errors.js";
import { type Driver, Mutex, type Param } from "./driver.js";

/**
 * SQLite on disk through the runtime's own binding (node:sqlite). WAL: a
 * commit is in the log file before the call returns, so a process killed at
 * any moment loses no committed write (synchronous=NORMAL gives up only what
 * a power cut takes from the OS's cache), and `kiln machines` reads while
 * `kiln serve` writes. One connection: transactions take turns.
 */
const FILE_LOCKS = new Map<string, Mutex>();

export function openSqlite(file: string): Driver {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(file);
    db.exec("PRAGMA busy_timeout = 5000");
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    // A checkpoint (the WAL copied back into the file, then an fsync) every 4,000
    // pages rather than SQLite's 1,000: a page a busy boot server rewrites in every
    // batch (the change counter, index nodes, the boots table's tail) is copied once
    // per checkpoint, not four times, with a quarter of the fsyncs; the checkpoint
    // runs inside a commit, on the event loop. The WAL stays under ~16 MiB. What a
    // commit wrote is in the WAL either way: durability is as before.
    db.exec("PRAGMA wal_autocheckpoint = 4000");
  } catch (err) {
    throw new KilnError(
      "FLEET_DB_BAD",
      `${file} is not a database kiln can open: ${(err as Error).message}`,
      {
        hint: "point --db at another file, or move this one away (kiln makes a new one)",
      },
    );
  }
  const cache = new Map<string, StatementSync>();
  const prepare = (sql: string) => {
    let s = cache.get(sql);
    if (!s) {
      s = db.prepare(sql);
      cache.set(sql, s);
    }
    return s;
  };
  // Per file, not per connection: two stores of one process on one file (tests,
  // replicas in one process) would otherwise wait on each other's lock while
  // holding the thread the other needs to finish (the busy wait is synchronous).
  let mutex = FILE_LOCKS.get(file);
  if (!mutex) {
    mutex = new Mutex();
    FILE_LOCKS.set(file, mutex);
  }
  const lock = mutex;
  const base = {
    dialect: "sqlite" as const,
    all: async <T>(sql: string, params: Param[] = []) => prepare(sql).all(...params) as T[],
    run: async (sql: string, params: Param[] = []) => Number(prepare(sql).run(...params).changes),
  };
  const driver: Driver = {
    ...base,
    tx: <T>(fn: (d: Driver) => Promise<T>) =>
      lock.run(async () => {
        db.exec("BEGIN IMMEDIATE");
        try {
          const out = await fn({
            ...base,
            tx: () => Promise.reject(new Error("nested")),
            close: async () => {},
          });
          db.exec("COMMIT");
          return out;
        } catch (err) {
          if (db.isTransaction) db.exec("ROLLBACK");
          throw err;
        }
      }),
    close: async () => {
      await lock.run(async () => {
        if (db.isOpen) db.close();
      });
    },
  };
  return driver;
}
