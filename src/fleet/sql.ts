import { Batcher } from "./batch.js";
import type { Driver, Param } from "./driver.js";
import {
  type Attached,
  type BootEvent,
  DEFAULT_FLEET_LIMITS,
  type FleetLimits,
  type FleetStore,
  type InstallEvent,
  type InstallRecord,
  type InstallState,
  type InstallUpdate,
  type LastBoot,
  type LastReport,
  type MachineDetail,
  type MachineFilter,
  type MachineSummary,
  machineState,
  type ReportEvent,
  type StoredReport,
} from "./store.js";

interface MachineRow {
  id: string;
  facts: string;
  first_seen: string;
  last_seen: string;
  grp: string | null;
  profile: string | null;
  requests: number | string;
}
interface BootRow {
  machine: string;
  at: string;
  grp: string | null;
  profile: string | null;
  artifact: string | null;
  server: string;
}
interface ReportRow {
  agent: string;
  machine: string | null;
  at: string;
  from_addr: string;
  attached: string;
  failed: string;
  ok: number | string;
}

interface InstallRow {
  machine: string;
  state: string;
  image: string | null;
  started_at: string;
  updated_at: string;
  finished_at: string | null;
  bytes: number | string;
  total: number | string;
  rate: number | string;
  reason: string | null;
  server: string;
}

const MACHINE_COLUMNS = "id, facts, first_seen, last_seen, grp, profile, requests";
const INSTALL_COLUMNS =
  "machine, state, image, started_at, updated_at, finished_at, bytes, total, rate, reason, server";

/**
 * The fleet store over either backend: the same statements for SQLite and
 * PostgreSQL (`?` placeholders, ISO-8601 UTC text for times, which sort as
 * they compare, JSON as text). Each write is one transaction that also bumps
 * the change counter, so a dashboard on any replica sees it.
 */
export class SqlFleetStore implements FleetStore {
  readonly kind: "sqlite" | "postgres";
  private readonly limits: FleetLimits;
  private expiredAt = 0;

  constructor(
    private readonly db: Driver,
    readonly where: string,
    limits: Partial<FleetLimits> = {},
    private readonly now: () => number = Date.now,
  ) {
    this.kind = db.dialect;
    this.limits = { ...DEFAULT_FLEET_LIMITS, ...limits };
    this.bootQueue = new Batcher((b) => this.writeBoots(b), {
      maxBatch: this.limits.bootBatch,
      maxPending: this.limits.maxPendingBoots,
      what: "boots",
    });
  }

  private iso(): string {
    return new Date(this.now()).toISOString();
  }

  private bump(t: Driver): Promise<unknown> {
    return t.dialect === "sqlite"
      ? t.run(
          "UPDATE kiln_meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'seq'",
        )
      : t.all("SELECT nextval('kiln_seq')");
  }

  /** Boots wait here for the transaction that commits them with others (see Batcher). */
  private readonly bootQueue: Batcher<{ e: BootEvent; at: string }, boolean>;

  async recordBoot(e: BootEvent): Promise<boolean> {
    // Stamped when asked, not when committed: the batch may commit a few ms later.
    return this.bootQueue.add({ e, at: this.iso() });
  }

  /**
   * A batch of boots in one transaction, in the order asked. Machines are
   * written once each, in id order: two replicas' batches on PostgreSQL then
   * lock shared rows in the same order and cannot deadlock. Their boots
   * follow in the order asked, so a machine's history stays in order.
   */
  private writeBoots(batch: { e: BootEvent; at: string }[]): Promise<boolean[]> {
    const byMachine = new Map<string, { e: BootEvent; first: string; at: string; n: number }>();
    for (const { e, at } of batch) {
      const m = byMachine.get(e.machine);
      // The last boot asked for says what the machine is now (facts, group, profile).
      if (m) Object.assign(m, { e, at, n: m.n + 1 });
      else byMachine.set(e.machine, { e, first: at, at, n: 1 });
    }
    const ids = [...byMachine.keys()].sort();
    return this.db.tx(async (t) => {
      const recorded = new Set<string>();
      const toTrim: string[] = [];
      let machines: number | undefined;
      for (const id of ids) {
        const { e, first, at, n } = byMachine.get(id)!;
        const facts = JSON.stringify(e.facts);
        let rows = await t.all<{ requests: number | string }>(
          `UPDATE machines SET facts = ?, last_seen = ?, grp = ?, profile = ?, requests = requests + ?
           WHERE id = ? RETURNING requests`,
          [facts, at, e.group, e.profile, n, id],
        );
        if (!rows.length) {
          // Counted once a batch; each new machine after adds one (an insert that
          // turns out an update, another replica's, counts too: the cap errs low).
          machines ??= await count(t, "SELECT COUNT(*) AS n FROM machines");
          if (machines >= this.limits.maxMachines) continue;
          machines++;
          // Another replica may insert the same machine at the same moment: then it is an update.
          rows = await t.all(
            `INSERT INTO machines (${MACHINE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET facts = excluded.facts, last_seen = excluded.last_seen,
               grp = excluded.grp, profile = excluded.profile, requests = machines.requests + ?
             RETURNING requests`,
            [id, facts, first, at, e.group, e.profile, n, n],
          );
        }
        recorded.add(id);
        // History is trimmed each time the machine's count of boots passes a multiple
        // of bootHistory, not at every boot: it holds bootHistory to 2×bootHistory−1
        // rows (reads show the newest bootHistory), for a twentieth of the deletes.
        const h = this.limits.bootHistory;
        const r = Number(rows[0]?.requests ?? 0);
        if (Math.floor((r - n) / h) !== Math.floor(r / h)) toTrim.push(id);
      }
      for (const { e, at } of batch)
        if (recorded.has(e.machine))
          await t.run(
            "INSERT INTO boots (machine, at, grp, profile, artifact, server) VALUES (?, ?, ?, ?, ?, ?)",
            [e.machine, at, e.group, e.profile, e.artifact, e.server],
          );
      for (const id of toTrim) await trim(t, "boots", "machine", id, this.limits.bootHistory);
      if (recorded.size) await this.bump(t);
      return batch.map(({ e }) => recorded.has(e.machine));
    });
  }

  async recordReport(e: ReportEvent): Promise<void> {
    const at = this.iso();
    const attached = JSON.stringify(e.attached);
    const failed = JSON.stringify(e.failed);
    const ok = e.ok ? 1 : 0;
    const bytes = Buffer.byteLength(e.body);
    await this.db.tx(async (t) => {
      await this.expire(t);
      const known = await t.all("SELECT 1 AS x FROM agent_reports WHERE agent = ?", [e.agent]);
      if (!known.length) {
        // Full: the agents that reported longest ago go (a live one reports again soon).
        const n = await count(t, "SELECT COUNT(*) AS n FROM agent_reports");
        const over = n - this.limits.maxReports + 1;
        if (over > 0)
          await t.run(
            `DELETE FROM agent_reports WHERE agent IN
              (SELECT agent FROM agent_reports ORDER BY at, agent LIMIT ?)`,
            [over],
          );
      }
      await t.run(
        `INSERT INTO agent_reports (agent, machine, at, from_addr, body, body_bytes, attached, failed, ok, server)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (agent) DO UPDATE SET machine = excluded.machine, at = excluded.at,
           from_addr = excluded.from_addr, body = excluded.body, body_bytes = excluded.body_bytes,
           attached = excluded.attached, failed = excluded.failed, ok = excluded.ok,
           server = excluded.server`,
        [e.agent, e.machine, at, e.from, e.body, bytes, attached, failed, ok, e.server],
      );
      await t.run(
        `INSERT INTO report_log (agent, machine, at, from_addr, attached, failed, ok, server)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
        [e.agent, e.machine, at, e.from, attached, failed, ok, e.server],
      );
      await trim(t, "report_log", "agent", e.agent, this.limits.reportHistory);
      await this.boundBodies(t);
      await this.bump(t);
    });
  }

  /** Bodies beyond the byte bound are dropped, oldest first (the parsed report stays). */
  private async boundBodies(t: Driver): Promise<void> {
    let total = await count(t, "SELECT COALESCE(SUM(body_bytes), 0) AS n FROM agent_reports");
    while (total > this.limits.maxReportTotalBytes) {
      const oldest = await t.all<{ agent: string; body_bytes: number | string }>(
        "SELECT agent, body_bytes FROM agent_reports WHERE body_bytes > 0 ORDER BY at, agent LIMIT 64",
      );
      if (!oldest.length) return;
      for (const o of oldest) {
        if (total <= this.limits.maxReportTotalBytes) return;
        await t.run("UPDATE agent_reports SET body = NULL, body_bytes = 0 WHERE agent = ?", [
          o.agent,
        ]);
        total -= Number(o.body_bytes);
      }
    }
  }

  /** Reports past their age go, at most once a minute (it scans an index). */
  private async expire(t: Driver): Promise<void> {
    const now = this.now();
    if (now - this.expiredAt < 60_000) return;
    this.expiredAt = now;
    const cutoff = new Date(now - this.limits.maxReportAgeMs).toISOString();
    await t.run("DELETE FROM agent_reports WHERE at < ?", [cutoff]);
    await t.run("DELETE FROM report_log WHERE at < ?", [cutoff]);
  }

  async findMachine(ids: string[]): Promise<string | null> {
    const some = ids.slice(0, 16);
    if (!some.length) return null;
    const rows = await this.db.all<{ id: string }>(
      `SELECT id FROM machines WHERE id IN (${some.map(() => "?").join(", ")}) ORDER BY id`,
      some,
    );
    // The first listed that is known, so the answer does not depend on the database's order.
    return some.find((id) => rows.some((r) => r.id === id)) ?? null;
  }

  async list(f: MachineFilter = {}): Promise<MachineSummary[]> {
    const where: string[] = [];
    const params: Param[] = [];
    if (f.group !== undefined) {
      where.push("grp = ?");
      params.push(f.group);
    }
    if (f.profile !== undefined) {
      where.push("profile = ?");
      params.push(f.profile);
    }
    if (f.seenWithinMs !== undefined) {
      where.push("last_seen >= ?");
      params.push(new Date(this.now() - f.seenWithinMs).toISOString());
    }
    const machines = await this.db.all<MachineRow>(
      `SELECT ${MACHINE_COLUMNS} FROM machines ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY last_seen DESC, id`,
      params,
    );
    const boots = new Map<string, LastBoot>();
    for (const b of await this.db.all<BootRow>(
      `SELECT b.machine, b.at, b.grp, b.profile, b.artifact, b.server FROM boots b
       JOIN (SELECT machine, MAX(id) AS id FROM boots GROUP BY machine) l ON b.id = l.id`,
    ))
      boots.set(b.machine, lastBoot(b));
    const reports = new Map<string, LastReport>();
    for (const r of await this.db.all<ReportRow>(
      `SELECT agent, machine, at, from_addr, attached, failed, ok FROM agent_reports
       WHERE machine IS NOT NULL ORDER BY at, agent`,
    ))
      reports.set(r.machine!, lastReport(r));
    const installs = new Map<string, InstallRecord>();
    for (const i of await this.db.all<InstallRow>(`SELECT ${INSTALL_COLUMNS} FROM installs`))
      installs.set(i.machine, installRecord(i));
    const out = machines.map((m) =>
      summary(m, boots.get(m.id) ?? null, reports.get(m.id) ?? null, installs.get(m.id) ?? null),
    );
    return f.state ? out.filter((m) => machineState(m) === f.state) : out;
  }

  async get(id: string): Promise<MachineDetail | undefined> {
    const m = (
      await this.db.all<MachineRow>(`SELECT ${MACHINE_COLUMNS} FROM machines WHERE id = ?`, [id])
    )[0];
    if (!m) return undefined;
    const boots = (
      await this.db.all<BootRow>(
        "SELECT machine, at, grp, profile, artifact, server FROM boots WHERE machine = ? ORDER BY id DESC LIMIT ?",
        [id, this.limits.bootHistory],
      )
    ).map(lastBoot);
    const reports = (
      await this.db.all<ReportRow>(
        `SELECT agent, machine, at, from_addr, attached, failed, ok FROM report_log
         WHERE machine = ? ORDER BY id DESC LIMIT ?`,
        [id, this.limits.reportHistory],
      )
    ).map(lastReport);
    const latest = (
      await this.db.all<ReportRow>(
        `SELECT agent, machine, at, from_addr, attached, failed, ok FROM agent_reports
         WHERE machine = ? ORDER BY at DESC LIMIT 1`,
        [id],
      )
    )[0];
    const current = await this.install(id);
    const installs = (
      await this.db.all<InstallEvent & { state: InstallState }>(
        `SELECT at, state, image, seconds, reason, server FROM install_log
         WHERE machine = ? ORDER BY id DESC LIMIT ?`,
        [id, this.limits.bootHistory],
      )
    ).map((e) => ({ ...e, seconds: e.seconds === null ? null : Number(e.seconds) }));
    return {
      ...summary(m, boots[0] ?? null, latest ? lastReport(latest) : null, current ?? null),
      boots,
      reports,
      installs,
    };
  }

  async recordInstall(u: InstallUpdate): Promise<void> {
    const at = this.iso();
    await this.db.tx(async (t) => {
      const cur = (
        await t.all<InstallRow>(`SELECT ${INSTALL_COLUMNS} FROM installs WHERE machine = ?`, [
          u.machine,
        ])
      )[0];
      // Installs are kept only for recorded machines, so their number is bounded by the
      // machines cap (a flood of new MACs past it gets boot tokens, not rows here).
      if (!cur && !(await t.all("SELECT 1 AS x FROM machines WHERE id = ?", [u.machine])).length)
        return;
      const fresh = !cur || u.start === true;
      // A late progress line from an install that has ended changes nothing.
      if (!fresh && cur && cur.state !== "installing") return;
      const ended = u.state !== "installing";
      if (fresh) {
        await t.run(
          `INSERT INTO installs (${INSTALL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (machine) DO UPDATE SET state = excluded.state, image = excluded.image,
             started_at = excluded.started_at, updated_at = excluded.updated_at,
             finished_at = excluded.finished_at, bytes = excluded.bytes, total = excluded.total,
             rate = excluded.rate, reason = excluded.reason, server = excluded.server`,
          [
            u.machine,
            u.state,
            u.image ?? null,
            at,
            at,
            ended ? at : null,
            u.bytes ?? 0,
            u.total ?? 0,
            u.rate ?? 0,
            u.reason ?? null,
            u.server,
          ],
        );
      } else {
        await t.run(
          `UPDATE installs SET state = ?, updated_at = ?, finished_at = ?, bytes = ?, total = ?,
             rate = ?, reason = ?, server = ? WHERE machine = ?`,
          [
            u.state,
            at,
            ended ? at : null,
            u.bytes ?? Number(cur!.bytes),
            u.total ?? Number(cur!.total),
            u.rate ?? Number(cur!.rate),
            u.reason ?? null,
            u.server,
            u.machine,
          ],
        );
      }
      if (fresh || ended) {
        const started = fresh ? at : cur!.started_at;
        const seconds = ended ? Math.round((Date.parse(at) - Date.parse(started)) / 1000) : null;
        await t.run(
          "INSERT INTO install_log (machine, at, state, image, seconds, reason, server) VALUES (?, ?, ?, ?, ?, ?, ?)",
          [
            u.machine,
            at,
            u.state,
            u.image ?? cur?.image ?? null,
            seconds,
            u.reason ?? null,
            u.server,
          ],
        );
        await trim(t, "install_log", "machine", u.machine, this.limits.bootHistory);
      }
      await this.bump(t);
    });
  }

  async install(machine: string): Promise<InstallRecord | undefined> {
    const r = (
      await this.db.all<InstallRow>(`SELECT ${INSTALL_COLUMNS} FROM installs WHERE machine = ?`, [
        machine,
      ])
    )[0];
    return r && installRecord(r);
  }

  async resetInstall(machine: string, server: string): Promise<boolean> {
    return this.db.tx(async (t) => {
      const n = await t.run("DELETE FROM installs WHERE machine = ?", [machine]);
      if (!n) return false;
      await t.run(
        "INSERT INTO install_log (machine, at, state, image, seconds, reason, server) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [machine, this.iso(), "failed", null, null, "reinstall asked for", server],
      );
      await this.bump(t);
      return true;
    });
  }

  async forget(id: string): Promise<boolean> {
    return this.db.tx(async (t) => {
      const n = await t.run("DELETE FROM machines WHERE id = ?", [id]);
      await t.run("DELETE FROM boots WHERE machine = ?", [id]);
      await t.run("DELETE FROM report_log WHERE machine = ?", [id]);
      await t.run("DELETE FROM agent_reports WHERE machine = ?", [id]);
      await t.run("DELETE FROM installs WHERE machine = ?", [id]);
      await t.run("DELETE FROM install_log WHERE machine = ?", [id]);
      await this.bump(t);
      return n > 0;
    });
  }

  async reports(): Promise<[string, StoredReport][]> {
    const rows = await this.db.all<{ agent: string; at: string; from_addr: string; body: string }>(
      "SELECT agent, at, from_addr, body FROM agent_reports ORDER BY at, agent",
    );
    return rows.map((r) => [r.agent, { at: r.at, from: r.from_addr, state: r.body ?? "" }]);
  }

  async version(): Promise<string> {
    const rows =
      this.db.dialect === "sqlite"
        ? await this.db.all<{ v: string }>("SELECT value AS v FROM kiln_meta WHERE key = 'seq'")
        : await this.db.all<{ v: string }>("SELECT last_value AS v FROM kiln_seq");
    return String(rows[0]?.v ?? "0");
  }

  async close(): Promise<void> {
    // Boots already asked for are committed (and answered) before the connection goes.
    await this.bootQueue.drained();
    return this.db.close();
  }
}

async function count(t: Driver, sql: string): Promise<number> {
  return Number((await t.all<{ n: number | string }>(sql))[0]?.n ?? 0);
}

/** Keep the newest `keep` rows of `table` whose `col` is `value`. */
async function trim(t: Driver, table: string, col: string, value: string, keep: number) {
  await t.run(
    `DELETE FROM ${table} WHERE ${col} = ? AND id <=
      (SELECT id FROM ${table} WHERE ${col} = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
    [value, value, keep],
  );
}

function summary(
  m: MachineRow,
  lastBoot: LastBoot | null,
  report: LastReport | null,
  install: InstallRecord | null,
): MachineSummary {
  return {
    id: m.id,
    facts: JSON.parse(m.facts) as Record<string, string>,
    firstSeen: m.first_seen,
    lastSeen: m.last_seen,
    group: m.grp,
    profile: m.profile,
    requests: Number(m.requests),
    lastBoot,
    report,
    install,
  };
}

function installRecord(r: InstallRow): InstallRecord {
  return {
    state: r.state as InstallState,
    image: r.image,
    startedAt: r.started_at,
    updatedAt: r.updated_at,
    finishedAt: r.finished_at,
    bytes: Number(r.bytes),
    total: Number(r.total),
    rate: Number(r.rate),
    reason: r.reason,
    server: r.server,
  };
}

function lastBoot(b: BootRow): LastBoot {
  return { at: b.at, group: b.grp, profile: b.profile, artifact: b.artifact, server: b.server };
}

function lastReport(r: ReportRow): LastReport {
  return {
    agent: r.agent,
    at: r.at,
    from: r.from_addr,
    attached: JSON.parse(r.attached) as Attached[],
    failed: JSON.parse(r.failed) as string[],
    ok: Number(r.ok) === 1,
  };
}
