import { DEFAULT_FLEET_LIMITS, type FleetLimits } from "../fleet/store.js";
import { log } from "../util/log.js";

/**
 * Bounds for what clients of `kiln serve` can make it hold or do. The boot
 * network is open to anyone plugged into it, so every table a client can
 * grow has a cap, and a flood is answered with 429/503 and a (rate-limited)
 * log line rather than with memory.
 */
export interface ServeLimits {
  /** Requests per second per client address on the small endpoints (0: no limit). */
  ratePerSecond: number;
  /** Requests one address may send at once before the rate applies. */
  burst: number;
  /** Client addresses tracked at once; beyond, new addresses get 503. */
  maxAddresses: number;
  /** Machines whose last report is kept; the oldest report goes first. */
  maxReports: number;
  /** Bytes of one report (its body); more is 413. */
  maxReportBytes: number;
  /** Bytes of all kept reports together; the oldest go first. */
  maxReportTotalBytes: number;
  /** A report older than this is dropped (ms). */
  maxReportAgeMs: number;
  /** Report bodies being received at once; beyond, 503. */
  maxReportsInFlight: number;
  /** Machines in the fleet database; new machines beyond are served but not recorded. */
  maxDiscoveryRows: number;
  /** Per-boot tokens (metadata/cloud-init of one boot) kept; the oldest go first. */
  maxBootTokens: number;
  /** A per-boot token is forgotten after this (ms). */
  bootTokenTtlMs: number;
  /** Open connections on the boot listener. */
  maxConnections: number;
}

export const DEFAULT_LIMITS: ServeLimits = {
  ratePerSecond: 10,
  burst: 50,
  maxAddresses: 16_384,
  maxReports: DEFAULT_FLEET_LIMITS.maxReports,
  maxReportBytes: 16_384,
  maxReportTotalBytes: DEFAULT_FLEET_LIMITS.maxReportTotalBytes,
  maxReportAgeMs: DEFAULT_FLEET_LIMITS.maxReportAgeMs,
  maxReportsInFlight: 64,
  maxDiscoveryRows: DEFAULT_FLEET_LIMITS.maxMachines,
  maxBootTokens: 20_000,
  bootTokenTtlMs: 24 * 3600_000,
  maxConnections: 1024,
};

/** The database's share of the bounds. */
export function fleetLimits(l: Partial<ServeLimits>): Partial<FleetLimits> {
  const f: Partial<FleetLimits> = {};
  if (l.maxDiscoveryRows !== undefined) f.maxMachines = l.maxDiscoveryRows;
  if (l.maxReports !== undefined) f.maxReports = l.maxReports;
  if (l.maxReportTotalBytes !== undefined) f.maxReportTotalBytes = l.maxReportTotalBytes;
  if (l.maxReportAgeMs !== undefined) f.maxReportAgeMs = l.maxReportAgeMs;
  return f;
}

/**
 * A token bucket per client address. The table of addresses is itself
 * bounded: when it is full, addresses whose bucket has refilled (idle
 * clients) are forgotten; if none has, the request is refused as "busy".
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly maxKeys: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** "ok", "limited" (this address is too fast: 429) or "busy" (too many addresses: 503). */
  take(key: string): "ok" | "limited" | "busy" {
    if (this.rate <= 0) return "ok";
    const t = this.now();
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= this.maxKeys && !this.sweep(t)) return "busy";
      b = { tokens: this.burst, at: t };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.rate);
    b.at = t;
    if (b.tokens < 1) return "limited";
    b.tokens -= 1;
    return "ok";
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Forget addresses whose bucket is full again; returns whether any room was made. */
  private sweep(t: number): boolean {
    const before = this.buckets.size;
    for (const [k, b] of this.buckets) {
      if (b.tokens + ((t - b.at) / 1000) * this.rate >= this.burst) this.buckets.delete(k);
    }
    return this.buckets.size < before;
  }
}

/**
 * Log lines under a flood: at most `perWindow` lines of one kind per window,
 * then one line saying how many were left out, so the journal does not grow
 * with the flood.
 */
export class LogLimiter {
  private readonly kinds = new Map<string, { start: number; lines: number; dropped: number }>();

  constructor(
    private readonly perWindow = 20,
    private readonly windowMs = 10_000,
    private readonly now: () => number = Date.now,
    private readonly write: (msg: string) => void = (m) => log.warn(m),
  ) {}

  line(kind: string, msg: string): void {
    const t = this.now();
    let k = this.kinds.get(kind);
    if (!k || t - k.start >= this.windowMs) {
      if (k?.dropped)
        this.write(
          `${kind}: ${k.dropped} more lines like this left out in ${this.windowMs / 1000} s`,
        );
      k = { start: t, lines: 0, dropped: 0 };
      this.kinds.set(kind, k);
    }
    if (k.lines < this.perWindow) {
      k.lines++;
      this.write(msg);
    } else k.dropped++;
  }
}

/** A systemd machine-id: 32 lowercase hex digits, nothing else. */
export const MACHINE_ID = /^[0-9a-f]{32}$/;
