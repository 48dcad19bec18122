import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { probeKvm } from "../../src/runtime/accel.js";
import { parseBootReport, parseChainLine, parseSpan } from "../../src/runtime/boot-report.js";
import { ConsoleWatcher, SILENT, STALL } from "../../src/runtime/console.js";
import { emulatorFault, findOvmf, qemuArgs } from "../../src/runtime/qemu.js";
import { findVm } from "../../src/runtime/ssh.js";

describe("KVM probe", () => {
  it("says kvm when the test kernel reaches its panic", async () => {
    const r = await probeKvm({
      kernel: "/k",
      boot: async () =>
        "Linux version 6.1\nKernel panic - not syncing: VFS: Unable to mount root fs",
    });
    expect(r).toMatchObject({ usable: "kvm", kvm: "works" });
  });
  it("falls back to tcg when the kernel hangs", async () => {
    const r = await probeKvm({
      kernel: "/k",
      boot: async () => {
        throw Object.assign(new Error("timed out"), {
          stdout: "Probing EDD (edd=off to disable)... ok",
        });
      },
    });
    expect(r).toMatchObject({ usable: "tcg", kvm: "broken" });
    expect(r.reason).toContain("Probing EDD");
  });
});

describe("console watcher", () => {
  it("is ready at the login prompt, with a duration", async () => {
    const w = new ConsoleWatcher();
    w.feed("\x1b[0;32m  OK  \x1b[0m] Started ssh\r\n\r\nminimal log");
    expect(w.state.state).toBe("booting");
    w.feed("in: ");
    expect(w.state.state).toBe("ready");
  });
  it("says where a boot's seconds went: firmware, loader, kernel, initrd, userspace", () => {
    let t = 0;
    const w = new ConsoleWatcher({ clock: () => t });
    t = 2000;
    w.feed("SeaBIOS (version 1.16.2)\nBooting from Hard Disk...\n");
    t = 2500;
    w.feed("Welcome to GRUB!\n                             GNU GRUB  version 2.06\n");
    // The console comes up late and flushes what the kernel logged since it started at 3.0 s.
    t = 4200;
    w.feed("[    0.000000] Linux version 6.1.0\n[    1.100000] console [ttyS0] enabled\n");
    t = 7000;
    w.feed("[    3.900000] Run /init as init process\n");
    t = 8000;
    w.feed("\nWelcome to Debian GNU/Linux 12 (bookworm)!\n\n");
    t = 12_000;
    w.feed("minimal login: ");
    expect(w.state).toMatchObject({ state: "ready", seconds: 12 });
    expect(w.breakdown()).toEqual({
      firmware: 2.5,
      loader: 0.6,
      kernel: 3.9,
      initrd: 1,
      userspace: 4,
    });
    // No loader (a direct kernel boot) and no kernel (nspawn): only what was seen.
    let u = 0;
    const n = new ConsoleWatcher({ clock: () => u });
    u = 300;
    n.feed("systemd 252.39-1~deb12u1 running in system mode\n");
    u = 700;
    n.feed("Reached target multi-user.target - Multi-User System.\n");
    expect(n.breakdown()).toEqual({ userspace: 0.4 });
  });
  it("sees the loader when an escape sequence is split across console chunks", () => {
    let t = 0;
    const w = new ConsoleWatcher({ clock: () => t });
    t = 900;
    w.feed("Booting from Hard Disk...\r\nGRUB loading.\r\n\x1b[0;30;4");
    t = 1000;
    w.feed("7mWelcome\x1b[1");
    w.feed(";10H to GRUB!\r\n");
    t = 9000;
    w.feed("minimal login: ");
    expect(w.breakdown()).toEqual({ firmware: 1 });
    expect(w.tail(5)).not.toContain("\x1b");
    expect(w.tail(5)).not.toMatch(/7m|;10H/);
  });
  it("fills in a quiet console's kernel, initrd and systemd from the guest's boot report", () => {
    let t = 0;
    const w = new ConsoleWatcher({ clock: () => t });
    t = 1000;
    w.feed("Booting `Debian'\n");
    // quiet: nothing from the kernel or systemd until the login prompt.
    t = 9000;
    w.feed("minimal login: ");
    // Where the loader ends and the kernel begins is unknown until the report comes.
    expect(w.breakdown()).toEqual({ firmware: 1 });
    // The guest's uptime is 8.5 s at 10.0 s on the host: the kernel started at 1.5 s.
    t = 10_000;
    w.feed(
      [
        "kiln-boot-report: uptime 8.50",
        "kiln-boot-report: init 2.00",
        "kiln-boot-report: systemd 2.75",
        "kiln-boot-report: systemd 3.10",
        "kiln-boot-report: unit 1min 2.5s slow.service",
        "kiln-boot-report: unit 523ms systemd-networkd.service",
        "kiln-boot-report: end",
        "",
      ].join("\n"),
    );
    expect(w.bootReport()).toEqual({
      uptime: 8.5,
      init: 2,
      systemd: 2.75,
      slowest: [
        { unit: "slow.service", seconds: 62.5 },
        { unit: "systemd-networkd.service", seconds: 0.52 },
      ],
    });
    expect(w.breakdown(9)).toEqual({
      firmware: 1,
      loader: 0.5,
      kernel: 2,
      initrd: 0.8,
      userspace: 4.8,
    });
  });
  it("fails at once on a kernel panic or emergency shell", async () => {
    const w = new ConsoleWatcher();
    const p = w.wait(60_000);
    w.feed(
      "[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n",
    );
    await expect(p).resolves.toMatchObject({
      state: "failed",
      reason: expect.stringContaining("kernel panic"),
    });
    const e = new ConsoleWatcher();
    e.feed("You are in emergency mode. After logging in, type...");
    expect(e.state).toMatchObject({
      state: "failed",
      reason: expect.stringContaining("emergency"),
    });
  });
  it("fails when the tiny initrd gives up waiting for the root disk", () => {
    const w = new ConsoleWatcher();
    w.feed("Timeout while waiting for devices for / (and possibly /usr) filesystems to appear\n");
    expect(w.state).toMatchObject({
      state: "failed",
      reason: expect.stringContaining("root device not found"),
    });
  });
  it("fails early on a guest CPU stall, which emulatorFault blames on the emulator", () => {
    const w = new ConsoleWatcher();
    w.feed("[   22.6] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n");
    expect(w.state).toMatchObject({ state: "failed", reason: expect.stringContaining(STALL) });
    const reason = w.state.state === "failed" ? w.state.reason : undefined;
    const alive = { child: { signalCode: null } };
    expect(emulatorFault(alive, reason)).toMatch(/stalled/);
    expect(emulatorFault(alive, "kernel panic: x")).toBeUndefined();
    expect(emulatorFault({ child: { signalCode: "SIGSEGV" } }, "not ready")).toMatch(/SIGSEGV/);
    expect(emulatorFault({ child: { signalCode: "SIGTERM" } }, "not ready")).toBeUndefined();
  });

  it("fails a boot whose console stays silent, as a hang emulatorFault blames on the emulator", async () => {
    const w = new ConsoleWatcher({ silenceMs: 60 });
    w.feed("[    1.03] Booting\n");
    await new Promise((r) => setTimeout(r, 40));
    w.feed("still talking\n");
    await new Promise((r) => setTimeout(r, 40));
    expect(w.state.state).toBe("booting");
    await new Promise((r) => setTimeout(r, 80));
    expect(w.state).toMatchObject({ state: "failed", reason: expect.stringContaining(SILENT) });
    const reason = w.state.state === "failed" ? w.state.reason : "";
    expect(emulatorFault({ child: { signalCode: null } }, reason)).toMatch(/silent/);
    const ready = new ConsoleWatcher({ silenceMs: 30 });
    ready.feed("node login: ");
    await new Promise((r) => setTimeout(r, 60));
    expect(ready.state.state).toBe("ready");
  });
  it("times out with a reason", async () => {
    const w = new ConsoleWatcher();
    await expect(w.wait(50)).resolves.toMatchObject({
      state: "failed",
      reason: "not ready after 0s",
    });
  });
});

describe("qemu", () => {
  it("uses a throw-away snapshot unless persisting, and pflash for UEFI", () => {
    const a = qemuArgs({
      image: "/x.qcow2",
      firmware: "uefi",
      accel: "tcg",
      qmp: "/q",
      code: "/c.fd",
      vars: "/v.fd",
      forwards: [{ host: 2222, guest: 22 }],
    });
    expect(a).toContain("file=/x.qcow2,if=virtio,format=qcow2,snapshot=on");
    expect(a.join(" ")).toContain("-accel tcg,thread=single");
    expect(a).toContain("if=pflash,format=raw,unit=0,readonly=on,file=/c.fd");
    expect(a.join(" ")).toContain("hostfwd=tcp:127.0.0.1:2222-:22");
    const b = qemuArgs({
      image: "/x.raw",
      firmware: "bios",
      accel: "kvm",
      qmp: "/q",
      persist: true,
    });
    expect(b).toContain("file=/x.raw,if=virtio,format=raw");
    expect(b).toContain("host");
  });
  it("reports missing OVMF with the package to install", () => {
    expect(() => findOvmf([["/nonexistent/CODE.fd", "/nonexistent/VARS.fd"]])).toThrow(
      /no UEFI firmware/,
    );
  });
});

describe("kiln ssh's VM records", () => {
  it("count a zombie as gone, not as a running VM", async () => {
    const cache = mkdtempSync(join(tmpdir(), "kiln-unit-ssh-"));
    const saved = process.env.KILN_CACHE;
    process.env.KILN_CACHE = cache;
    // The backgrounded sleep ends a second later, when its parent shell has
    // become `sleep 30` (exec), which never reaps it: a zombie.
    const parent = spawn("sh", ["-c", "sleep 1 & echo $!; exec sleep 30"], { stdio: "pipe" });
    try {
      const [chunk] = (await once(parent.stdout, "data")) as [Buffer];
      const zombie = Number(chunk.toString().trim());
      const state = () => {
        try {
          return readFileSync(`/proc/${zombie}/stat`, "utf8").split(") ")[1]?.[0];
        } catch {
          return undefined;
        }
      };
      await until(() => state() === "Z");
      expect(state(), "the test needs a real zombie").toBe("Z");
      mkdirSync(join(cache, "vms"));
      const rec = { name: "ghost", port: 2222, key: "/nonexistent", pid: zombie, image: "x" };
      writeFileSync(join(cache, "vms", "ghost.json"), JSON.stringify(rec));
      await expect(findVm("ghost")).rejects.toMatchObject({ code: "SSH_NO_VM" });
      expect(existsSync(join(cache, "vms", "ghost.json"))).toBe(false);
    } finally {
      parent.kill("SIGKILL");
      if (saved === undefined) delete process.env.KILN_CACHE;
      else process.env.KILN_CACHE = saved;
      rmSync(cache, { recursive: true, force: true });
    }
  });
});

async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 50));
}

describe("systemd time spans and the boot report", () => {
  it("reads systemd's spans and refuses what is not one", () => {
    expect(parseSpan("1min 2.345s")).toBeCloseTo(62.345);
    expect(parseSpan("523ms")).toBeCloseTo(0.523);
    expect(parseSpan("87us")).toBeCloseTo(0.000087);
    expect(parseSpan("1h 2min")).toBe(3720);
    expect(parseSpan("fast")).toBeUndefined();
    expect(parseSpan("")).toBeUndefined();
  });
  it("takes a report only when it has all arrived, and skips lines it cannot read", () => {
    expect(parseBootReport("kiln-boot-report: uptime 3.0\n")).toBeUndefined();
    const r = parseBootReport(
      "noise\nkiln-boot-report: uptime 3.0\nkiln-boot-report: unit soon foo.service\nkiln-boot-report: init x\nkiln-boot-report: end\n",
    );
    expect(r).toEqual({ uptime: 3, slowest: [] });
  });
  it("reads the critical chain the login prompt waited for", () => {
    const r = parseBootReport(
      [
        "kiln-boot-report: uptime 14.2",
        "kiln-boot-report: chain getty.target @12.101s",
        "kiln-boot-report: chain └─serial-getty@ttyS0.service @12.090s",
        "kiln-boot-report: chain   └─systemd-user-sessions.service @11.9s +150ms",
        "kiln-boot-report: chain     └─systemd-networkd.service @7.301s +1min 4.012s",
        "kiln-boot-report: chain       └─not a unit line",
        "kiln-boot-report: end",
      ].join("\n"),
    );
    expect(r?.chain).toEqual([
      { unit: "getty.target", at: 12.1 },
      { unit: "serial-getty@ttyS0.service", at: 12.09 },
      { unit: "systemd-user-sessions.service", at: 11.9, took: 0.15 },
      { unit: "systemd-networkd.service", at: 7.3, took: 64.01 },
    ]);
    expect(parseChainLine("└─foo.service @soon")).toBeUndefined();
    expect(parseChainLine("systemd-journald.socket")).toEqual({ unit: "systemd-journald.socket" });
  });
});
