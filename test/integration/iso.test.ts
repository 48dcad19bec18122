import { spawn, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KILN, ROOT, kiln as run } from "./helpers.js";

// Issue 9 for real: the ISO of test/integration/specs/iso.yaml boots in
// QEMU (TCG) with a blank disk, in BIOS and in UEFI mode, installs itself
// unattended and reboots; the disk alone then boots and passes the spec's
// checks. A disk that already holds a partition table and data is refused
// and left byte-for-byte as it was.
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-iso-"));
const ISO = join(OUT, "iso/iso.iso");

const kiln = (args: string[], timeout = 1_200_000) => run(args, { timeout });

beforeAll(() => {
  const b = kiln(["build", "test/integration/specs/iso.yaml", "-o", join(OUT, "iso"), "--json"]);
  expect(b.code, b.stderr).toBe(0);
});

afterAll(() => rmSync(OUT, { recursive: true, force: true }));

/** A blank target disk in a directory of its own, with the build's manifest (its checks) beside it. */
function target(name: string): string {
  const dir = join(OUT, name);
  mkdirSync(dir);
  copyFileSync(join(OUT, "iso/manifest.json"), join(dir, "manifest.json"));
  const disk = join(dir, "target.qcow2");
  expect(spawnSync("qemu-img", ["create", "-q", "-f", "qcow2", disk, "4G"]).status).toBe(0);
  return disk;
}

/** `kiln vm` booting the ISO with `disk` attached; QEMU ends when the guest reboots (--no-reboot). */
function bootIso(disk: string, firmware: string, log: string) {
  // stdin stays open: the serial console is kiln's, and EOF there must not end the VM.
  const vm = spawn(
    process.execPath,
    [
      KILN,
      "vm",
      disk,
      "--persist",
      "--cdrom",
      ISO,
      "--no-reboot",
      "--firmware",
      firmware,
      "--accel",
      "tcg",
      "--console-log",
      log,
    ],
    { cwd: ROOT, stdio: ["pipe", "ignore", "pipe"] },
  );
  let stderr = "";
  vm.stderr!.on("data", (b) => {
    stderr += String(b);
  });
  const exited = new Promise<number | null>((res) => vm.on("close", (c) => res(c)));
  return { vm, exited, stderr: () => stderr };
}

/** Boot the ISO until the installer reboots the guest. */
async function install(
  disk: string,
  firmware: string,
  log: string,
): Promise<{ code: number | null; stderr: string }> {
  const b = bootIso(disk, firmware, log);
  const timer = setTimeout(() => b.vm.kill("SIGTERM"), 900_000);
  const code = await b.exited;
  clearTimeout(timer);
  return { code, stderr: b.stderr() };
}

describe("installer ISO", () => {
  it("is a hybrid ISO no more than 1.5 times the qcow2", () => {
    const iso = statSync(ISO).size;
    const qcow2 = statSync(join(OUT, "iso/iso.qcow2")).size;
    expect(iso).toBeLessThanOrEqual(1.5 * qcow2);
    // El Torito for BIOS and an EFI boot image, as xorriso reports them.
    const r = spawnSync("xorriso", ["-indev", ISO, "-report_el_torito", "plain"], {
      encoding: "utf8",
    });
    expect(r.stdout + r.stderr).toMatch(/El Torito boot img\s*:\s*1\s+BIOS/);
    expect(r.stdout + r.stderr).toMatch(/El Torito boot img\s*:\s*2\s+UEFI/);
  });

  for (const firmware of ["bios", "uefi"]) {
    it(`${firmware}: installs onto a blank disk unattended; the disk alone boots and passes the checks`, async () => {
      const disk = target(firmware);
      const log = join(OUT, `${firmware}-install.log`);
      const started = Date.now();
      const r = await install(disk, firmware, log);
      console.log(
        `${firmware}: unattended install ${(Date.now() - started) / 1000} s (ISO boot to reboot)`,
      );
      const text = existsSync(log) ? readFileSync(log, "utf8") : "";
      expect(r.code, `${r.stderr}\n${text.slice(-3000)}`).toBe(0);
      expect(text).toMatch(
        /kiln-install: writing iso 0\.1\.0 \(\d+ MiB image\) to \/dev\/vda .*the first disk without a partition table or filesystem/,
      );
      expect(text).toMatch(/kiln-install: installed iso 0\.1\.0 on \/dev\/vda in \d+ s/);
      const t = kiln(["test", disk, "--on", firmware, "--accel", "tcg", "--json"]);
      const j = JSON.parse(t.stdout || "{}");
      const results = j.targets?.[0]?.results ?? [];
      expect(
        results.map((c: { name: string; passed: boolean }) => [c.name, c.passed]),
        `${t.stderr}\n${j.targets?.[0]?.bootError ?? ""}`,
      ).toEqual([
        ["hostname", true],
        ["admin has a hashed password", true],
        ["root grown to the disk", true],
      ]);
    });
  }

  it("the live system (kiln test --on iso) passes the spec's checks, run from the CD", () => {
    const t = kiln(["test", join(OUT, "iso"), "--on", "iso", "--accel", "tcg", "--json"]);
    const j = JSON.parse(t.stdout || "{}");
    expect(t.code, `${t.stderr}\n${j.targets?.[0]?.bootError ?? ""}`).toBe(0);
    expect(
      j.targets[0].results.map((c: { name: string; passed: boolean }) => [c.name, c.passed]),
    ).toEqual([
      ["hostname", true],
      ["admin has a hashed password", true],
      ["live from the CD", true],
    ]);
  });

  it("refuses a disk that holds a partition table and data, and leaves it unchanged", async () => {
    const dir = join(OUT, "used");
    mkdirSync(dir);
    const disk = join(dir, "used.raw");
    spawnSync("truncate", ["-s", "3G", disk]);
    spawnSync("sfdisk", ["-q", disk], { input: "label: gpt\nsize=100M, type=linux\n" });
    spawnSync("dd", [
      `if=/dev/urandom`,
      `of=${disk}`,
      "bs=1M",
      "count=8",
      "seek=2",
      "conv=notrunc",
      "status=none",
    ]);
    const sum = () => spawnSync("sha256sum", [disk], { encoding: "utf8" }).stdout.split(" ")[0];
    const before = sum();
    const log = join(OUT, "used-console.log");
    const { vm, exited } = bootIso(disk, "bios", log);
    let text = "";
    for (let i = 0; i < 180 && !/kiln-install: nothing was written/.test(text); i++) {
      await new Promise((r) => setTimeout(r, 2000));
      text = existsSync(log) ? readFileSync(log, "utf8") : "";
    }
    vm.kill("SIGTERM");
    await exited;
    expect(text).toMatch(/kiln-install: skipping \/dev\/vda: it holds a gpt partition table/);
    expect(text).toMatch(/kiln-install: REFUSED: no empty disk/);
    expect(sum()).toBe(before);
  });
});
