import { KilnError } from "../util/errors.js";
import { type ChainLink, REPORT_END } from "./boot-report.js";
import type { BootBreakdown, ConsoleWatcher } from "./console.js";

export interface ReadyReport {
  target: string;
  ready: boolean;
  seconds: number | null;
  /** Where the seconds went (see BootBreakdown). */
  breakdown?: BootBreakdown;
  /** The guest's slowest units (systemd-analyze blame), when it reported them. */
  slowest?: { unit: string; seconds: number }[];
  /** What the login prompt waited for (systemd-analyze critical-chain), the prompt's side first. */
  chain?: ChainLink[];
  reason?: string;
  consoleTail?: string;
}

/**
 * Wait for a started guest to be ready, always stopping it; failures carry
 * the console tail. `reportMs`: the guest had the boot report injected
 * (boot-report.ts); wait this long after ready for it to arrive.
 */
export async function bootUntilReady(
  target: string,
  guest: { watcher: ConsoleWatcher; stop(): Promise<void> },
  timeoutMs: number,
  reportMs = 0,
): Promise<ReadyReport> {
  try {
    const s = await guest.watcher.wait(timeoutMs);
    if (s.state === "ready") {
      // Ready is measured at the login prompt; the report only adds detail, so a
      // guest that never sends it still counts as ready.
      if (reportMs) await guest.watcher.waitForText(REPORT_END, reportMs);
      const report = guest.watcher.bootReport();
      const slowest = report?.slowest;
      const chain = report?.chain;
      return {
        target,
        ready: true,
        seconds: Math.round(s.seconds * 10) / 10,
        breakdown: guest.watcher.breakdown(s.seconds),
        ...(slowest?.length ? { slowest } : {}),
        ...(chain?.length ? { chain } : {}),
      };
    }
    const reason = s.state === "failed" ? s.reason : "unknown";
    return { target, ready: false, seconds: null, reason, consoleTail: guest.watcher.tail(50) };
  } finally {
    await guest.stop();
  }
}

export function bootFailure(r: ReadyReport): KilnError {
  return new KilnError(
    "BOOT_FAILED",
    `${r.target}: boot failed: ${r.reason}\n--- last console lines ---\n${r.consoleTail ?? ""}`,
    { exitCode: 2 },
  );
}

/** "firmware 2.1 s, kernel 4.0 s, …": a breakdown for people. */
export function breakdownText(b: BootBreakdown | undefined): string {
  const parts = Object.entries(b ?? {}).map(([k, v]) => `${k} ${v}s`);
  return parts.length ? ` (${parts.join(", ")})` : "";
}

/** "slowest units: systemd-networkd.service 5.1s, …" */
export function slowestText(r: ReadyReport, count = 5): string {
  const u = (r.slowest ?? []).slice(0, count).map((x) => `${x.unit} ${x.seconds}s`);
  return u.length ? `slowest units: ${u.join(", ")}` : "";
}

/** "critical chain: getty.target @12.1s ← … ← systemd-networkd.service @7.3s +4.0s ← …" */
export function chainText(r: ReadyReport): string {
  const links = (r.chain ?? []).map(
    (l) =>
      `${l.unit}${l.at !== undefined ? ` @${l.at}s` : ""}${l.took !== undefined ? ` +${l.took}s` : ""}`,
  );
  return links.length ? `critical chain: ${links.join(" ← ")}` : "";
}
