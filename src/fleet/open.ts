import { resolve } from "node:path";
import { cacheDir } from "../util/paths.js";
import { migrate } from "./migrations.js";
import { openPostgres, redactUrl } from "./postgres.js";
import { SqlFleetStore } from "./sql.js";
import { openSqlite } from "./sqlite.js";
import type { FleetLimits, FleetStore } from "./store.js";

/** Where kiln serve and kiln machines keep the fleet unless told otherwise (a file or postgres://…). */
export function defaultDb(): string {
  return process.env.KILN_DB ?? cacheDir("machines.sqlite");
}

export const isPostgres = (db: string) => /^postgres(ql)?:\/\//.test(db);

/** The fleet database `db` names (a SQLite file, or a postgres:// URL), migrated to this kiln's schema. */
export async function openFleet(
  db: string,
  limits: Partial<FleetLimits> = {},
  now: () => number = Date.now,
): Promise<FleetStore> {
  const pgUrl = isPostgres(db);
  const where = pgUrl ? redactUrl(db) : resolve(db);
  const driver = pgUrl ? await openPostgres(db) : openSqlite(where);
  try {
    await migrate(driver, where);
  } catch (err) {
    await driver.close();
    throw err;
  }
  return new SqlFleetStore(driver, where, limits, now);
}
