import { spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { KILN, kiln, ours, ROOT } from "./helpers.js";

// `kiln test` for real: a spec with passing checks of every kind and a
// deliberately failing one, booted on nspawn, UEFI and BIOS (TCG).
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-test-"));

afterAll(() => rmSync(OUT, { recursive: true, force: true }));

interface Report {
  target: string;
  ready: boolean;
  readySeconds: number | null;
  bootError?: string;
  results: { name: string; passed: boolean; expected: string; actual: string }[];
}

describe("kiln test", () => {
  it("runs every check on nspawn, UEFI and BIOS; exit 1, JSON and JUnit name the failure", () => {
    const junit = join(OUT, "junit.xml");
    const r = kiln([
      "test",
      "test/integration/specs/checks.yaml",
      "-o",
      join(OUT, "checks"),
      "--on",
      "nspawn,uefi,bios",
      "--accel",
      "tcg",
      "--json",
      "--junit",
      junit,
    ]);
    expect(r.code, r.stderr).toBe(1);
    const j = JSON.parse(r.stdout) as { ok: boolean; targets: Report[] };
    expect(j.ok).toBe(false);
    expect(j.targets.map((t) => [t.target, t.ready])).toEqual([
      ["nspawn", true],
      ["uefi", true],
      ["bios", true],
    ]);
    for (const t of j.targets) {
      expect(t.readySeconds).toBeGreaterThan(0);
      const byName = Object.fromEntries(t.results.map((c) => [c.name, c]));
      // The minimal example's checks pass everywhere (the kernel and the disk only in VMs).
      const vm = t.target !== "nspawn";
      for (const n of [
        "sshd active",
        "hostname",
        "admin exists",
        "motd",
        "ssh port",
        "security suite in the apt sources",
        "admin may sudo",
        "system bus",
        "hostnamectl over the bus",
        ...(vm
          ? [
              "kernel is the newest the suites offered, from -security or -updates",
              "disk filled by its last partition and filesystem",
            ]
          : []),
      ])
        expect(byName[n]?.passed, `${t.target}: ${n}: ${byName[n]?.actual}`).toBe(true);
      expect(byName["deliberately failing"]).toMatchObject({
        passed: false,
        expected: "exit 0, stdout /^right$/",
      });
      expect(byName["deliberately failing"]!.actual).toBe('exit 3, stdout "wrong"; stderr "oops"');
      // sshd answers, but not with HTTP: the status line is not 200.
      expect(byName["http to sshd"]!.passed).toBe(false);
      expect(Boolean(byName["nspawn only"])).toBe(t.target === "nspawn");
    }
    expect(j.targets[0]!.results.find((c) => c.name === "nspawn only")!.passed).toBe(true);
    const xml = readFileSync(junit, "utf8");
    expect(xml).toContain('<testsuite name="checks on uefi" tests="13" failures="2" errors="0"');
    expect(xml).toContain(
      '<failure message="expected exit 0, stdout /^right$/, got exit 3, stdout &quot;wrong&quot;; stderr &quot;oops&quot;"/>',
    );
    // The artifact is unchanged: the test unit went only into throw-away copies.
    expect(
      existsSync(join(OUT, "checks", "checks.rootfs", "etc/systemd/system/kiln-test.service")),
    ).toBe(false);
    expect(
      readdirSync(tmpdir()).filter(
        (f) => f.startsWith("kiln-overlay-") || f.startsWith("kiln-vm-"),
      ),
    ).toEqual([]);
    expect(
      readdirSync(process.env.KILN_SCRATCH!).filter((f) => f.startsWith("kiln-disk-")),
    ).toEqual([]);
  });

  it("a target with no checks to run is an error before anything boots (exit 2)", () => {
    const dir = join(OUT, "no-checks");
    mkdirSync(dir);
    const m = JSON.parse(readFileSync(join(OUT, "checks", "manifest.json"), "utf8"));
    writeFileSync(join(dir, "manifest.json"), JSON.stringify({ ...m, tests: [] }));
    const t = kiln(["test", dir, "--on", "bios"]);
    expect(t.code).toBe(2);
    expect(t.stderr).toContain("checks has no checks to run on bios");
  });

  it("an image that never becomes ready fails fast (exit 2) with the console tail", () => {
    const started = Date.now();
    const r = kiln([
      "test",
      "test/integration/specs/never-ready.yaml",
      "-o",
      join(OUT, "nr"),
      "--on",
      "bios",
      "--accel",
      "tcg",
      "--timeout",
      "240",
      "--json",
    ]);
    const seconds = (Date.now() - started) / 1000;
    expect(r.code, r.stderr).toBe(2);
    const t = (JSON.parse(r.stdout) as { targets: Report[] }).targets[0]!;
    expect(t.ready).toBe(false);
    expect(t.bootError).toMatch(/root device not found|kernel panic/);
    expect(t.bootError).toContain("--- last console lines ---");
    // Well before the 240 s boot timeout: the failure is recognised on the console.
    expect(seconds).toBeLessThan(200);
  });

  it("kiln ssh reaches a VM started with --ssh; ending kiln vm ends QEMU and its record", async () => {
    const image = join(OUT, "checks", "checks.qcow2");
    const vm = spawn(
      process.execPath,
      [
        KILN,
        "vm",
        image,
        "--direct-kernel",
        "--accel",
        "tcg",
        "--ssh",
        "--console-log",
        join(OUT, "ssh-console.log"),
      ],
      {
        cwd: ROOT,
        stdio: ["pipe", "ignore", "pipe"],
      },
    );
    const exited = new Promise<number | null>((res) => vm.on("close", (code) => res(code)));
    try {
      let answer = "";
      for (let i = 0; i < 60 && !answer; i++) {
        await new Promise((r) => setTimeout(r, 5000));
        const r = kiln(["ssh", "checks", "--", "hostname; id -un"]);
        if (r.code === 0) answer = r.stdout;
      }
      expect(answer).toBe("minimal\nroot\n");
      const st = kiln(["ssh", "checks", "--", "exit 7"]);
      expect(st.code).toBe(7);
    } finally {
      vm.kill("SIGTERM");
      await exited;
    }
    const qemu = ours(`qemu-system-x86_64.*${image}`);
    expect(qemu).toEqual([]);
    expect(kiln(["ssh", "checks", "--", "true"]).stderr).toContain("no running VM named checks");
  });

  it("the KVM probe runs for real and answers with a usable accelerator", () => {
    const r = kiln(["doctor", "--json", "--reprobe"]);
    const j = JSON.parse(r.stdout) as { accel: { usable: string; kvm: string; reason: string } };
    expect(["kvm", "tcg"]).toContain(j.accel.usable);
    // After a build the apt cache holds a kernel, so the probe really booted one.
    expect(["works", "broken", "absent"]).toContain(j.accel.kvm);
    expect(j.accel.usable === "kvm").toBe(j.accel.kvm === "works");
  });

  it("Ctrl-C during a test boot ends QEMU and removes the throw-away disk", async () => {
    const image = join(OUT, "checks", "checks.qcow2");
    const t = spawn(process.execPath, [KILN, "test", image, "--on", "bios", "--accel", "tcg"], {
      cwd: ROOT,
      stdio: "ignore",
    });
    const exited = new Promise<number | null>((res) => t.on("close", (code) => res(code)));
    const qemuRunning = () => ours("qemu-system-x86_64.*kiln-disk-").length > 0;
    for (let i = 0; i < 100 && !qemuRunning(); i++) await new Promise((r) => setTimeout(r, 200));
    expect(qemuRunning()).toBe(true);
    t.kill("SIGINT");
    expect(await exited).toBe(130);
    expect(qemuRunning()).toBe(false);
    expect(
      readdirSync(process.env.KILN_SCRATCH!).filter((f) => f.startsWith("kiln-disk-")),
    ).toEqual([]);
  });

  it("a QEMU crash during a test boot is not the image's fault: booted again once, and said so", async () => {
    const image = join(OUT, "checks", "checks.qcow2");
    const t = spawn(
      process.execPath,
      [KILN, "test", image, "--on", "bios", "--accel", "tcg", "--json"],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    t.stdout.on("data", (b: Buffer) => (stdout += b));
    t.stderr.on("data", (b: Buffer) => (stderr += b));
    const exited = new Promise<number | null>((res) => t.on("close", (code) => res(code)));
    const qemuPid = () => String(ours("qemu-system-x86_64.*kiln-disk-")[0] ?? "");
    for (let i = 0; i < 100 && !qemuPid(); i++) await new Promise((r) => setTimeout(r, 200));
    // What QEMU 7.2's TCG does now and then by itself, here on purpose.
    process.kill(Number(qemuPid()), "SIGSEGV");
    expect(await exited, stderr).toBe(1);
    expect(stderr).toContain("QEMU was killed by SIGSEGV");
    const r = (JSON.parse(stdout) as { targets: (Report & { retried?: string })[] }).targets[0]!;
    expect(r.ready).toBe(true);
    expect(r.retried).toMatch(/SIGSEGV/);
    expect(
      readdirSync(process.env.KILN_SCRATCH!).filter((f) => f.startsWith("kiln-disk-")),
    ).toEqual([]);
  });

  it("Ctrl-C during a build leaves no work directory and no process", async () => {
    const out = join(OUT, "interrupted");
    const b = spawn(
      process.execPath,
      [KILN, "build", "examples/minimal.yaml", "-o", out, "--refresh"],
      { cwd: ROOT, stdio: "ignore" },
    );
    const exited = new Promise<number | null>((res) => b.on("close", (code) => res(code)));
    // --refresh makes mmdebstrap run, so the signal lands in the middle of the bootstrap.
    for (let i = 0; i < 100 && ours("mmdebstrap", { exact: true }).length === 0; i++)
      await new Promise((r) => setTimeout(r, 200));
    await new Promise((r) => setTimeout(r, 3000));
    b.kill("SIGINT");
    expect(await exited).toBe(130);
    await new Promise((r) => setTimeout(r, 1000));
    expect(ours("mmdebstrap", { exact: true })).toEqual([]);
    expect(readdirSync(OUT).filter((f) => f.includes("interrupted"))).toEqual([]);
  });
});
