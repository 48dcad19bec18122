import { KilnError } from "../util/errors.js";
import type { BootBreakdown, ConsoleWatcher } from "./console.js";

export interface ReadyReport {
  target: string;
  ready: boolean;
  seconds: number | null;
  /** Where the seconds went (see BootBreakdown). */
  breakdown?: BootBreakdown;
  reason?: string;
  consoleTail?: string;
}

/** Wait for a started guest to be ready, always stopping it; failures carry the console tail. */
export async function bootUntilReady(
  target: string,
  guest: { watcher: ConsoleWatcher; stop(): Promise<void> },
  timeoutMs: number,
): Promise<ReadyReport> {
  try {
    const s = await guest.watcher.wait(timeoutMs);
    if (s.state === "ready")
      return {
        target,
        ready: true,
        seconds: Math.round(s.seconds * 10) / 10,
        breakdown: guest.watcher.breakdown(),
      };
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
