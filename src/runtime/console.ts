import { type BootReport, parseBootReport } from "./boot-report.js";

/**
 * Reads a guest's console as it arrives and decides, as early as the text
 * allows, whether the boot is ready, failed, or still going: a login prompt
 * or the multi-user target means ready; a kernel panic or an emergency shell
 * fails at once instead of at the timeout.
 */
export type BootState =
  | { state: "booting" }
  | { state: "ready"; seconds: number }
  | { state: "failed"; reason: string };

/**
 * Where a boot's seconds went, from when the console said what (host clock,
 * QEMU start = 0) and the kernel's own printk times: firmware until the boot
 * loader speaks (or the kernel starts, without one), loader until the
 * kernel starts, kernel until it runs /init, initrd until systemd greets,
 * userspace until ready. A phase the console did not show is left out
 * (nspawn has only userspace; a direct kernel boot has no loader).
 */
export type BootBreakdown = Partial<
  Record<"firmware" | "loader" | "kernel" | "initrd" | "userspace", number>
>;

const REPORT_UPTIME = "kiln-boot-report: uptime ";
const LOADER = /GNU GRUB {2}version|Welcome to GRUB!|Booting `[^'\n]*'/;
const KERNEL_LINE = /^\[\s*(\d+\.\d+)\] /gm;
const RUN_INIT = /Run \/\S*init as init process/;
const SYSTEMD =
  /systemd\[1\]: systemd \d+|Welcome to (?!GRUB)[^\n]*!|systemd \d+\S* running in system mode/;

/** The reason prefix of a boot that failed because the guest's CPUs stalled. */
export const STALL = "guest CPU stall";
/** The reason prefix of a boot whose console said nothing for too long. */
export const SILENT = "console silent";

const READY = [/\blogin: ?$/m, /Reached target .*Multi-User System/];
const FAILED: [RegExp, string][] = [
  [/Kernel panic - not syncing[^\n]*/, "kernel panic"],
  [/You are in emergency mode[^\n]*/, "emergency shell"],
  [/Give root password for maintenance[^\n]*/, "emergency shell"],
  [
    /Cannot open access to console, the root account is locked[^\n]*/,
    "emergency shell (root locked)",
  ],
  // A stalled vCPU in early boot, under TCG: QEMU's fault (lost timer
  // interrupts), not the image's. Failing here, 21 s in, leaves time to boot again.
  [
    /rcu: INFO: rcu_(?:preempt|sched) (?:detected stalls|self-detected stall)[^\n]*|watchdog: BUG: soft lockup[^\n]*/,
    STALL,
  ],
  // The netboot initrd gave up (no DHCP, no root image, or not the build's image): it stops there.
  [/kiln-netboot: FAILED: [^\n]*(?=\n)/, "netboot failed"],
  [/Failed to mount root[^\n]*|Unable to mount root fs[^\n]*/, "root filesystem not mounted"],
  [
    /No root filesystem \(root=\)[^\n]*|Could not mount root[^\n]*|Timed out waiting for root device[^\n]*|Timeout while waiting for devices[^\n]*/,
    "root device not found",
  ],
];

// biome-ignore lint/suspicious/noControlCharactersInRegex: stripping terminal escapes is the point
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>c]|\r/g;

export function stripAnsi(text: string): string {
  return text.replace(ANSI, "");
}

export class ConsoleWatcher {
  private text = "";
  /** The unfinished escape sequence a chunk ended with. */
  private partial = "";
  private readonly clock: () => number;
  private readonly started: number;
  private result: BootState = { state: "booting" };
  private ended = false;
  private readonly listeners: ((s: BootState) => void)[] = [];
  private silence: NodeJS.Timeout | undefined;
  /** Host seconds since start at which each milestone first showed. */
  private readonly marks: {
    loader?: number;
    kernel?: number;
    init?: number;
    systemd?: number;
    /** When the guest's boot report (see boot-report.ts) began to arrive. */
    report?: number;
  } = {};

  /** `silenceMs`: fail a boot whose console says nothing for this long (a hung guest). */
  /** `clock`: milliseconds, performance.now() unless a test gives its own. */
  constructor(private readonly o: { silenceMs?: number; clock?: () => number } = {}) {
    this.clock = o.clock ?? (() => performance.now());
    this.started = this.clock();
    this.armSilence();
  }

  private armSilence(): void {
    if (!this.o.silenceMs) return;
    clearTimeout(this.silence);
    const ms = this.o.silenceMs;
    this.silence = setTimeout(() => {
      this.settle({
        state: "failed",
        reason: `${SILENT}: no console output for ${Math.round(ms / 1000)} s`,
      });
    }, ms);
    this.silence.unref();
  }

  feed(chunk: string): void {
    // An escape sequence split across chunks would survive stripAnsi in
    // pieces and break the text around it (SeaBIOS mirrors GRUB's screen to
    // serial with a cursor move per word): its start waits for the rest.
    let raw = this.partial + chunk;
    // biome-ignore lint/suspicious/noControlCharactersInRegex: an escape sequence is what it looks for
    const cut = /\x1b[[()]?[0-9;?]*$/.exec(raw);
    this.partial = cut ? cut[0] : "";
    if (cut) raw = raw.slice(0, cut.index);
    const from = Math.max(0, this.text.length - 200);
    this.text += stripAnsi(raw);
    this.mark(this.text.slice(from), (this.clock() - this.started) / 1000);
    if (this.result.state === "booting") this.armSilence();
    if (this.text.length > 2_000_000) this.text = this.text.slice(-1_000_000);
    if (this.result.state !== "booting") return;
    for (const [re, why] of FAILED) {
      const m = re.exec(this.text);
      if (m) {
        this.settle({ state: "failed", reason: `${why}: ${m[0].trim()}` });
        return;
      }
    }
    if (READY.some((re) => re.test(this.text))) {
      this.settle({ state: "ready", seconds: (this.clock() - this.started) / 1000 });
    }
  }

  private mark(recent: string, now: number): void {
    const m = this.marks;
    if (m.loader === undefined && m.kernel === undefined && LOADER.test(recent)) m.loader = now;
    if (m.init === undefined) {
      // A line the kernel stamped t arrived no earlier than t after it started:
      // the smallest such estimate is the tightest.
      for (const k of recent.matchAll(KERNEL_LINE)) {
        const start = Math.max(0, now - Number(k[1]));
        if (m.kernel === undefined || start < m.kernel) m.kernel = start;
      }
      if (RUN_INIT.test(recent)) m.init = now;
    }
    if (m.systemd === undefined && SYSTEMD.test(recent)) m.systemd = now;
    if (m.report === undefined && recent.includes(REPORT_UPTIME)) m.report = now;
  }

  /** The guest's boot report, once it has all arrived. */
  bootReport(): BootReport | undefined {
    return this.marks.report === undefined ? undefined : parseBootReport(this.text);
  }

  /** Where the seconds went so far (see BootBreakdown); complete once ready. */
  breakdown(readyAt?: number): BootBreakdown {
    const m = { ...this.marks };
    // A quiet console hides the kernel's lines; the guest's report has their stamps.
    const r = this.bootReport();
    if (r && m.report !== undefined) {
      const kernelAt = Math.max(0, m.report - r.uptime);
      m.kernel ??= kernelAt;
      if (r.init !== undefined) m.init ??= kernelAt + r.init;
      if (r.systemd !== undefined) m.systemd ??= kernelAt + r.systemd;
    }
    const end = readyAt ?? (this.result.state === "ready" ? this.result.seconds : undefined);
    const b: BootBreakdown = {};
    const put = (k: keyof BootBreakdown, a: number | undefined, z: number | undefined) => {
      if (a !== undefined && z !== undefined && z >= a) b[k] = Math.round((z - a) * 10) / 10;
    };
    const firstOwn = m.loader ?? m.kernel;
    put("firmware", 0, firstOwn);
    put("loader", m.loader, m.kernel);
    put("kernel", m.kernel, m.init);
    put("initrd", m.init, m.systemd);
    put("userspace", m.systemd, end);
    return b;
  }

  get state(): BootState {
    return this.result;
  }

  /** The console so far, without terminal escapes. */
  get output(): string {
    return this.text;
  }

  tail(lines = 50): string {
    return this.text.trimEnd().split("\n").slice(-lines).join("\n");
  }

  /** Resolves when ready or failed, or with a timeout failure. */
  wait(timeoutMs: number): Promise<BootState> {
    if (this.result.state !== "booting") return Promise.resolve(this.result);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.settle({
          state: "failed",
          reason: `not ready after ${Math.round(timeoutMs / 1000)}s`,
        });
      }, timeoutMs);
      this.listeners.push((s) => {
        clearTimeout(t);
        resolve(s);
      });
    });
  }

  /** Resolves true when `marker` appears in the console, false on timeout or when the guest ends. */
  waitForText(marker: string, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const started = Date.now();
      const poll = () => {
        if (this.text.includes(marker)) return resolve(true);
        if (this.ended || Date.now() - started > timeoutMs) return resolve(false);
        setTimeout(poll, 250);
      };
      poll();
    });
  }

  /** The guest ended before it was ready. */
  exited(code: number | null, signal?: string | null): void {
    this.ended = true;
    const how = signal ? `was killed by ${signal}` : `exited (status ${code})`;
    if (this.result.state === "booting")
      this.settle({ state: "failed", reason: `the guest ${how} before it was ready` });
  }

  private settle(s: BootState): void {
    if (this.result.state !== "booting") return;
    clearTimeout(this.silence);
    this.result = s;
    for (const l of this.listeners.splice(0)) l(s);
  }
}
