/**
 * What kiln knows about a fleet, in one database that `kiln serve` (one
 * replica or several) writes and `kiln machines` reads: machines and their
 * facts, the group and profile they matched, every boot, and what their
 * kiln-agent reported. Two backends implement it with the same SQL
 * (sql.ts): SQLite on disk (the default) and PostgreSQL (several servers).
 *
 * Every write is acknowledged only once it is committed, so a server killed
 * at any moment loses nothing it answered. Every table is bounded (see
 * FleetLimits): a client can make the database hold only so much.
 */

export type Facts = Record<string, string>;

/** One request for a boot script, as the server answered it. */
export interface BootEvent {
  /** The machine's key: its MAC (or SMBIOS UUID without one), normalised. */
  machine: string;
  facts: Facts;
  group: string | null;
  profile: string | null;
  /** What the profile boots, e.g. "fleet-base 1.2.0" (from the bundle's manifest). */
  artifact: string | null;
  /** Which replica answered (host:port). */
  server: string;
}

/** One add-on a machine's agent says is attached. */
export interface Attached {
  kind: string;
  name: string;
  version: string;
}

/** A kiln-agent report, parsed and bounded (report.ts). */
export interface ReportEvent {
  /** The agent's /etc/machine-id (32 hex digits). */
  agent: string;
  /** The machine it belongs to (one of the MACs it listed that the fleet knows), if any. */
  machine: string | null;
  from: string;
  /** The body as sent (≤ maxReportBytes), for /reports.json. */
  body: string;
  attached: Attached[];
  failed: string[];
  ok: boolean;
  server: string;
}

export interface LastBoot {
  at: string;
  group: string | null;
  profile: string | null;
  artifact: string | null;
  server: string;
}

export interface LastReport {
  agent: string;
  at: string;
  from: string;
  attached: Attached[];
  failed: string[];
  ok: boolean;
}

/** installing: the installer is writing; installed: it wrote and verified; failed: it said why. */
export type InstallState = "installing" | "installed" | "failed";

export interface InstallRecord {
  state: InstallState;
  /** "NAME VERSION" of the image. */
  image: string | null;
  startedAt: string;
  updatedAt: string;
  finishedAt: string | null;
  bytes: number;
  total: number;
  /** Bytes per second, as the installer last measured. */
  rate: number;
  reason: string | null;
  server: string;
}

/** One ended (or begun) install, for a machine's history. */
export interface InstallEvent {
  at: string;
  state: InstallState;
  image: string | null;
  seconds: number | null;
  reason: string | null;
  server: string;
}

export interface InstallUpdate {
  machine: string;
  /** A new install begins (the installer asked for its plan): earlier progress is dropped. */
  start?: boolean;
  state: InstallState;
  image?: string | null;
  bytes?: number;
  total?: number;
  rate?: number;
  reason?: string | null;
  server: string;
}

export interface MachineSummary {
  id: string;
  facts: Facts;
  firstSeen: string;
  lastSeen: string;
  group: string | null;
  profile: string | null;
  /** Boot-script requests answered, over the machine's life. */
  requests: number;
  lastBoot: LastBoot | null;
  report: LastReport | null;
  install: InstallRecord | null;
}

export interface MachineDetail extends MachineSummary {
  /** Newest first, at most FleetLimits.bootHistory. */
  boots: LastBoot[];
  /** Newest first, at most FleetLimits.reportHistory. */
  reports: LastReport[];
  /** Newest first, at most FleetLimits.bootHistory. */
  installs: InstallEvent[];
}

export interface StoredReport {
  at: string;
  from: string;
  state: string;
}

export interface FleetLimits {
  /** Machines recorded at most; a new machine beyond it is served but not recorded. */
  maxMachines: number;
  /** Agents whose last report is kept at most (the oldest report goes first). */
  maxReports: number;
  /** Bytes of last-report bodies kept in all (the oldest bodies go first). */
  maxReportTotalBytes: number;
  /** Reports older than this are dropped. */
  maxReportAgeMs: number;
  /** Boots shown per machine (up to twice as many are stored: history is trimmed in steps). */
  bootHistory: number;
  /** Reports kept per machine. */
  reportHistory: number;
  /** Boots committed in one transaction at most (see Batcher). */
  bootBatch: number;
  /** Boots waiting for their commit at most; beyond, recordBoot rejects with QueueFull. */
  maxPendingBoots: number;
}

export const DEFAULT_FLEET_LIMITS: FleetLimits = {
  maxMachines: 10_000,
  maxReports: 10_000,
  maxReportTotalBytes: 16 * 1024 * 1024,
  maxReportAgeMs: 7 * 24 * 3600_000,
  bootHistory: 20,
  reportHistory: 20,
  bootBatch: 256,
  // Each waiting boot is an open request with its facts (≤ a few KiB): 4,096 is
  // a few MiB at most, and ~0.4 s of work at 10,000 boots/s.
  maxPendingBoots: 4096,
};

export interface MachineFilter {
  group?: string;
  profile?: string;
  state?: MachineState;
  /** Seen within this many milliseconds. */
  seenWithinMs?: number;
}

/**
 * unmatched: no group; install-failed: its last install to disk failed;
 * installing: an install is running; failing: its agent's last report names
 * failures; reporting: its agent reports, all well; installed: installed to
 * its disk, no report (yet); booted: booted, no report yet.
 */
export type MachineState =
  | "unmatched"
  | "install-failed"
  | "installing"
  | "failing"
  | "reporting"
  | "installed"
  | "booted";
export const MACHINE_STATES: readonly MachineState[] = [
  "unmatched",
  "install-failed",
  "installing",
  "failing",
  "reporting",
  "installed",
  "booted",
];

export function machineState(
  m: Pick<MachineSummary, "group" | "report"> & { install?: InstallRecord | null },
): MachineState {
  if (!m.group) return "unmatched";
  if (m.install?.state === "failed") return "install-failed";
  if (m.install?.state === "installing") return "installing";
  if (m.report && !m.report.ok) return "failing";
  if (m.report) return "reporting";
  if (m.install?.state === "installed") return "installed";
  return "booted";
}

export interface FleetStore {
  readonly kind: "sqlite" | "postgres";
  /** The file, or the URL without its password: for messages. */
  readonly where: string;
  /**
   * Record a boot; false when the machine is new and the table is full (nothing
   * written). Boots asked for together are committed in one transaction; this
   * resolves once that has committed, and rejects with QueueFull (batch.ts) when
   * too many wait already.
   */
  recordBoot(e: BootEvent): Promise<boolean>;
  /** Keep an agent's report (the oldest go when full); resolves once committed. */
  recordReport(e: ReportEvent): Promise<void>;
  /** The known machine among these ids (MACs an agent listed), if any. */
  findMachine(ids: string[]): Promise<string | null>;
  list(filter?: MachineFilter): Promise<MachineSummary[]>;
  get(id: string): Promise<MachineDetail | undefined>;
  /** Start, advance or end a machine's install (progress updates are ignored once it ended). */
  recordInstall(u: InstallUpdate): Promise<void>;
  /** The machine's current install, if any. */
  install(machine: string): Promise<InstallRecord | undefined>;
  /** Forget the current install so the next network boot installs again; false if none. */
  resetInstall(machine: string, server: string): Promise<boolean>;
  /** Delete a machine with its boots and reports; false if it was not there. */
  forget(id: string): Promise<boolean>;
  /** Agents' last reports, oldest first (the admin listener's /reports.json). */
  reports(): Promise<[string, StoredReport][]>;
  /** Grows (or changes) with every write, from any replica: what dashboards poll. */
  version(): Promise<string>;
  close(): Promise<void>;
}
