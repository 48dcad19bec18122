import { diskCopy, type Injected, isDiskImage } from "./ephemeral.js";
import type { VmOptions } from "./qemu.js";

/**
 * The guest's own account of its boot, printed to the console once startup
 * has finished, for `kiln vm --until-ready` (and so `npm run bench`). With
 * `quiet` the console shows nothing between the boot loader and the login
 * prompt, so the host cannot tell the kernel from userspace by what it sees;
 * the guest can: its uptime (since the kernel started), the kernel's stamps
 * of running /init and of systemd starting, and systemd-analyze's blame.
 * Every line is prefixed so that none looks like a kernel line or a
 * milestone to the console watcher.
 */
export const REPORT_END = "kiln-boot-report: end";
const P = "kiln-boot-report:";

/** The most units the report names (the slowest first). */
export const SLOWEST_UNITS = 8;

// After=multi-user.target with Type=simple: started once the target is
// reached, never delaying it, and `is-system-running --wait` returns when the
// last start job (this one's included) is done, so blame is complete.
const UNIT = `[Unit]
Description=kiln boot report (injected by kiln vm --until-ready)
After=multi-user.target

[Service]
Type=simple
ExecStart=/bin/sh /usr/lib/kiln-boot-report/report.sh
`;

// uptime comes first: the host stamps its arrival, so arrival - uptime is
// when the kernel started on the host's clock.
const SCRIPT = `exec >/dev/console 2>&1
systemctl is-system-running --wait >/dev/null 2>&1
printf '${P} uptime %s\\n' "$(cut -d' ' -f1 /proc/uptime)"
dmesg 2>/dev/null | sed -n \\
  -e 's/^\\[ *\\([0-9.]*\\)\\] Run \\/[^ ]*init as init process.*/${P} init \\1/p' \\
  -e 's/^\\[ *\\([0-9.]*\\)\\] systemd\\[1\\]: systemd [0-9][^ ]* running in system mode.*/${P} systemd \\1/p'
systemd-analyze blame --no-pager 2>/dev/null | head -n ${SLOWEST_UNITS} | sed 's/^ */${P} unit /'
systemd-analyze critical-chain --no-pager getty.target 2>/dev/null | grep '[@+][0-9]' | sed 's/^/${P} chain /'
echo '${REPORT_END}'
`;

export function bootReportFiles(): Injected[] {
  return [
    { path: "/usr/lib/kiln-boot-report/report.sh", content: SCRIPT, mode: 0o755 },
    { path: "/etc/systemd/system/kiln-boot-report.service", content: UNIT },
    {
      path: "/etc/systemd/system/multi-user.target.wants/kiln-boot-report.service",
      linkTo: "/etc/systemd/system/kiln-boot-report.service",
    },
  ];
}

export interface BootReport {
  /** Guest seconds since the kernel started, when the report was written. */
  uptime: number;
  /** Kernel stamps (seconds since it started) of running /init and of systemd starting. */
  init?: number;
  systemd?: number;
  /** systemd-analyze blame: the slowest units, slowest first. */
  slowest: { unit: string; seconds: number }[];
  /**
   * What the login prompt waited for (systemd-analyze critical-chain
   * getty.target), the prompt's side first: when each unit was active (`at`,
   * seconds since systemd started) and how long it took to start (`took`).
   */
  chain?: ChainLink[];
}

export interface ChainLink {
  unit: string;
  at?: number;
  took?: number;
}

/** One line of critical-chain: "  └─systemd-networkd.service @7.301s +4.012s". */
export function parseChainLine(line: string): ChainLink | undefined {
  const m = /^[\s└├│─|`-]*([\w@.:\\-]+\.[a-z]+)((?:\s+[@+][^@+]+)*)$/.exec(line.trim());
  if (!m) return undefined;
  const link: ChainLink = { unit: m[1]! };
  // A span may have several words ("1min 2.3s"); each starts at its sign.
  for (const t of m[2]!.matchAll(/([@+])([^@+]+)/g)) {
    const v = parseSpan(t[2]!);
    if (v === undefined) return undefined;
    link[t[1] === "@" ? "at" : "took"] = Math.round(v * 100) / 100;
  }
  return link;
}

/** systemd's time spans: "1min 2.345s", "523ms", "1.2s", "87us". */
export function parseSpan(text: string): number | undefined {
  const units: Record<string, number> = {
    h: 3600,
    min: 60,
    s: 1,
    ms: 1e-3,
    us: 1e-6,
    µs: 1e-6,
  };
  let total = 0;
  let any = false;
  for (const part of text.trim().split(/\s+/)) {
    const m = /^(\d+(?:\.\d+)?)(h|min|s|ms|us|µs)$/.exec(part);
    if (!m) return undefined;
    total += Number(m[1]) * units[m[2]!]!;
    any = true;
  }
  return any ? total : undefined;
}

/** The report in a console's text, if it is all there. */
export function parseBootReport(text: string): BootReport | undefined {
  const end = text.lastIndexOf(REPORT_END);
  if (end < 0) return undefined;
  const start = text.lastIndexOf(`${P} uptime `, end);
  if (start < 0) return undefined;
  const r: BootReport = { uptime: Number.NaN, slowest: [] };
  for (const line of text.slice(start, end).split("\n")) {
    const m = /^kiln-boot-report: (uptime|init|systemd|unit|chain) (.*)$/.exec(line.trim());
    if (!m) continue;
    const [, key, value] = m as unknown as [string, string, string];
    if (key === "chain") {
      const link = parseChainLine(value);
      if (link) r.chain = [...(r.chain ?? []), link];
    } else if (key === "unit") {
      // "4.123s systemd-networkd.service" or "1min 2.3s foo.service"
      const u = /^(.*\S)\s+(\S+)$/.exec(value);
      const seconds = u ? parseSpan(u[1]!) : undefined;
      if (u && seconds !== undefined)
        r.slowest.push({ unit: u[2]!, seconds: Math.round(seconds * 100) / 100 });
    } else {
      // The first of each: an initrd with its own systemd starts it twice.
      const k = key as "uptime" | "init" | "systemd";
      const n = Number(value);
      if (Number.isFinite(n) && (k === "uptime" || r[k] === undefined)) r[k] = n;
    }
  }
  return Number.isFinite(r.uptime) ? r : undefined;
}

/**
 * A boot like `o` that sends the report: injected into a throw-away copy of
 * its disk (debugfs, the artifact untouched) or appended to its netboot
 * initrd. A persisting VM's disk is the user's and gets nothing; `reports`
 * says whether to wait for one.
 */
export async function reportingBoot(
  o: VmOptions,
): Promise<{ opts: VmOptions; reports: boolean; dispose(): Promise<void> }> {
  const none = async () => {};
  if (o.persist) return { opts: o, reports: false, dispose: none };
  if (o.netboot)
    return {
      opts: { ...o, inject: [...(o.inject ?? []), ...bootReportFiles()] },
      reports: true,
      dispose: none,
    };
  if (!o.image || !isDiskImage(o.image)) return { opts: o, reports: false, dispose: none };
  const copy = await diskCopy(o.image, bootReportFiles());
  return { opts: { ...o, image: copy.path }, reports: true, dispose: () => copy.dispose() };
}
