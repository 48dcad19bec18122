import { KilnError } from "../util/errors.js";
import type { Driver } from "./driver.js";

type Dialect = Driver["dialect"];

/**
 * The fleet database's schema, as the steps that make it: a database at
 * version N gets the steps after N, in one transaction, and records the
 * version it reached. Version 1 is the machines table exactly as kiln's
 * sql.js discovery file (before there was a version) had it, created only if
 * missing, so such a file is migrated in place rather than lost.
 */
const STEPS: { version: number; sql: (d: Dialect) => string[] }[] = [
  {
    version: 1,
    sql: () => [
      `CREATE TABLE IF NOT EXISTS machines (
        id TEXT PRIMARY KEY, facts TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
        grp TEXT, profile TEXT, requests INTEGER NOT NULL DEFAULT 1)`,
    ],
  },
  {
    version: 2,
    sql: (d) => {
      const id = d === "sqlite" ? "id INTEGER PRIMARY KEY" : "id BIGSERIAL PRIMARY KEY";
      return [
        "CREATE INDEX IF NOT EXISTS machines_last_seen ON machines (last_seen)",
        "CREATE INDEX IF NOT EXISTS machines_grp ON machines (grp)",
        `CREATE TABLE boots (${id}, machine TEXT NOT NULL, at TEXT NOT NULL,
          grp TEXT, profile TEXT, artifact TEXT, server TEXT NOT NULL)`,
        "CREATE INDEX boots_machine ON boots (machine, id)",
        // The body last: SQLite reads a row's columns in order, and a long body's
        // overflow pages would be walked to reach any column after it.
        `CREATE TABLE agent_reports (agent TEXT PRIMARY KEY, machine TEXT, at TEXT NOT NULL,
          from_addr TEXT NOT NULL, body_bytes INTEGER NOT NULL, attached TEXT NOT NULL,
          failed TEXT NOT NULL, ok INTEGER NOT NULL, server TEXT NOT NULL, body TEXT)`,
        "CREATE INDEX agent_reports_at ON agent_reports (at)",
        // SUM(body_bytes) for the byte bound, from the index alone.
        "CREATE INDEX agent_reports_bytes ON agent_reports (body_bytes)",
        "CREATE INDEX agent_reports_machine ON agent_reports (machine)",
        `CREATE TABLE report_log (${id}, agent TEXT NOT NULL, machine TEXT, at TEXT NOT NULL,
          from_addr TEXT NOT NULL, attached TEXT NOT NULL, failed TEXT NOT NULL, ok INTEGER NOT NULL,
          server TEXT NOT NULL)`,
        "CREATE INDEX report_log_agent ON report_log (agent, id)",
        "CREATE INDEX report_log_machine ON report_log (machine, id)",
        "CREATE INDEX report_log_at ON report_log (at)",
        // The change counter dashboards poll (see FleetStore.version).
        d === "sqlite"
          ? "INSERT INTO kiln_meta (key, value) VALUES ('seq', '0')"
          : "CREATE SEQUENCE kiln_seq",
      ];
    },
  },
  {
    version: 3,
    sql: (d) => {
      const id = d === "sqlite" ? "id INTEGER PRIMARY KEY" : "id BIGSERIAL PRIMARY KEY";
      return [
        // A machine's install to its own disk: the current one, and how each ended.
        `CREATE TABLE installs (machine TEXT PRIMARY KEY, state TEXT NOT NULL, image TEXT,
          started_at TEXT NOT NULL, updated_at TEXT NOT NULL, finished_at TEXT,
          bytes BIGINT NOT NULL DEFAULT 0, total BIGINT NOT NULL DEFAULT 0,
          rate BIGINT NOT NULL DEFAULT 0, reason TEXT, server TEXT NOT NULL)`,
        `CREATE TABLE install_log (${id}, machine TEXT NOT NULL, at TEXT NOT NULL,
          state TEXT NOT NULL, image TEXT, seconds INTEGER, reason TEXT, server TEXT NOT NULL)`,
        "CREATE INDEX install_log_machine ON install_log (machine, id)",
      ];
    },
  },
];

export const SCHEMA_VERSION = STEPS[STEPS.length - 1]!.version;

/** Bring the database to SCHEMA_VERSION; refuse one made by a newer kiln. */
export async function migrate(db: Driver, where: string): Promise<number> {
  return db.tx(async (t) => {
    // Replicas starting together: one migrates, the others wait and find it done.
    if (t.dialect === "postgres") await t.all("SELECT pg_advisory_xact_lock(7354623)");
    await t.run("CREATE TABLE IF NOT EXISTS kiln_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
    const row = (
      await t.all<{ value: string }>("SELECT value FROM kiln_meta WHERE key = 'schema_version'")
    )[0];
    const have = row ? Number(row.value) : 0;
    if (!Number.isInteger(have) || have > SCHEMA_VERSION)
      throw new KilnError(
        "FLEET_DB_NEWER",
        `${where} has schema version ${row?.value}, newer than this kiln's ${SCHEMA_VERSION}`,
        { hint: "run a kiln at least as new as the one that wrote it" },
      );
    for (const step of STEPS.filter((s) => s.version > have))
      for (const sql of step.sql(t.dialect)) await t.run(sql);
    if (have !== SCHEMA_VERSION)
      await t.run(
        `INSERT INTO kiln_meta (key, value) VALUES ('schema_version', ?)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
        [String(SCHEMA_VERSION)],
      );
    return have;
  });
}
