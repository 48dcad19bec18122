import pg from "pg";
import { KilnError } from "../util/errors.js";
import type { Driver, Param } from "./driver.js";

/** `?` → `$1`, `$2`, …: kiln's statements hold no `?` in literals. */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

/** The URL for messages: never the password. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "postgres://(unparsable URL)";
  }
}

/**
 * PostgreSQL through node-postgres: a small pool, each transaction on one
 * connection of it. Several `kiln serve` replicas share the database; their
 * writes are ordinary transactions, so each sees the others' at once.
 */
export async function openPostgres(url: string): Promise<Driver> {
  const pool = new pg.Pool({
    connectionString: url,
    max: 8,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    application_name: "kiln",
  });
  // A broken idle connection (the database restarted) is dropped by the pool; it must not kill kiln.
  pool.on("error", () => {});
  try {
    (await pool.connect()).release();
  } catch (err) {
    await pool.end().catch(() => {});
    throw new KilnError(
      "FLEET_DB_CONNECT",
      `cannot reach ${redactUrl(url)}: ${(err as Error).message}`,
      {
        hint: "check the URL, that PostgreSQL listens there, and the role's password (PGPASSWORD or the URL)",
      },
    );
  }
  const on = (q: pg.Pool | pg.PoolClient): Omit<Driver, "tx" | "close"> => ({
    dialect: "postgres",
    all: async <T>(sql: string, params: Param[] = []) =>
      (await q.query(numbered(sql), params)).rows as T[],
    run: async (sql: string, params: Param[] = []) =>
      (await q.query(numbered(sql), params)).rowCount ?? 0,
  });
  return {
    ...on(pool),
    tx: async <T>(fn: (d: Driver) => Promise<T>) => {
      const c = await pool.connect();
      try {
        await c.query("BEGIN");
        const out = await fn({
          ...on(c),
          tx: () => Promise.reject(new Error("nested fleet transaction")),
          close: async () => {},
        });
        await c.query("COMMIT");
        return out;
      } catch (err) {
        await c.query("ROLLBACK").catch(() => {});
        throw err;
      } finally {
        c.release();
      }
    },
    close: () => pool.end(),
  };
}
