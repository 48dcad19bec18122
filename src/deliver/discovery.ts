import { existsSync, readFileSync } from "node:fs";
import { mkdir, rename, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import initSqlJs, { type Database } from "sql.js";
import { cacheDir } from "../util/paths.js";

/** Where kiln serve and kiln machines keep the fleet's records unless told otherwise. */
export function defaultDb(): string {
  return process.env.KILN_DB ?? cacheDir("machines.sqlite");
}

const SELECT = "SELECT id, facts, first_seen, last_seen, grp, profile, requests FROM machines";

export interface MachineRecord {
  id: string;
  facts: Record<string, string>;
  firstSeen: string;
  lastSeen: string;
  group: string | null;
  profile: string | null;
  requests: number;
}

/**
 * Every machine that asks for a boot script, in an embedded SQLite database
 * (sql.js: SQLite compiled to WebAssembly, so nothing native to build). The
 * file is rewritten atomically, at most every half second (boot storms must
 * not mean a disk write per request) and on close; `kiln machines` reads it.
 */
export class Discovery {
  private timer: NodeJS.Timeout | undefined;
  private saving: Promise<void> = Promise.resolve();
  private rows: number;

  private constructor(
    private readonly db: Database,
    private readonly file: string,
  ) {
    this.rows = Number(db.exec("SELECT COUNT(*) FROM machines")[0]?.values[0]?.[0] ?? 0);
  }

  static async open(file: string): Promise<Discovery> {
    const SQL = await initSqlJs();
    const db = existsSync(file) ? new SQL.Database(readFileSync(file)) : new SQL.Database();
    db.run(`CREATE TABLE IF NOT EXISTS machines (
      id TEXT PRIMARY KEY, facts TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
      grp TEXT, profile TEXT, requests INTEGER NOT NULL DEFAULT 1)`);
    return new Discovery(db, file);
  }

  /** Record a request; a new machine beyond `maxRows` is not recorded (returns false). */
  async record(
    id: string,
    facts: Record<string, string>,
    group: string | null,
    profile: string | null,
    maxRows = Number.POSITIVE_INFINITY,
  ): Promise<boolean> {
    const known = this.db.exec("SELECT 1 FROM machines WHERE id = ?", [id]).length > 0;
    if (!known && this.rows >= maxRows) return false;
    if (!known) this.rows++;
    const now = new Date().toISOString();
    this.db.run(
      `INSERT INTO machines (id, facts, first_seen, last_seen, grp, profile) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET facts = excluded.facts, last_seen = excluded.last_seen,
         grp = excluded.grp, profile = excluded.profile, requests = requests + 1`,
      [id, JSON.stringify(facts), now, now, group, profile],
    );
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.saving = this.saving.then(() => this.save());
    }, 500);
    return true;
  }

  /** Write pending changes now (on shutdown). */
  async flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.saving = this.saving.then(() => this.save());
    }
    await this.saving;
  }

  list(): MachineRecord[] {
    return this.query(`${SELECT} ORDER BY last_seen DESC`);
  }

  get(id: string): MachineRecord | undefined {
    return this.query(`${SELECT} WHERE id = ?`, [id])[0];
  }

  private query(sql: string, params: string[] = []): MachineRecord[] {
    const res = this.db.exec(sql, params);
    return (res[0]?.values ?? []).map((r) => ({
      id: String(r[0]),
      facts: JSON.parse(String(r[1])) as Record<string, string>,
      firstSeen: String(r[2]),
      lastSeen: String(r[3]),
      group: r[4] === null ? null : String(r[4]),
      profile: r[5] === null ? null : String(r[5]),
      requests: Number(r[6]),
    }));
  }

  private async save(): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp-${process.pid}`;
    await writeFile(tmp, this.db.export());
    await rename(tmp, this.file);
  }
}
