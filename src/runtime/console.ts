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
  private readonly started = performance.now();
  private result: BootState = { state: "booting" };
  private ended = false;
  private readonly listeners: ((s: BootState) => void)[] = [];
  private silence: NodeJS.Timeout | undefined;

  /** `silenceMs`: fail a boot whose console says nothing for this long (a hung guest). */
  constructor(private readonly o: { silenceMs?: number } = {}) {
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
    this.text += stripAnsi(chunk);
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
      this.settle({ state: "ready", seconds: (performance.now() - this.started) / 1000 });
    }
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
