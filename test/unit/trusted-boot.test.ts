import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { rootRecord } from "../../src/builder/steps/netboot.js";
import { main } from "../../src/cli/main.js";
import { VERSION_RE } from "../../src/deliver/bundle.js";
import { ConsoleWatcher } from "../../src/runtime/console.js";

const asset = (a: string) => join(import.meta.dirname, "../../assets", a);

describe("netboot root image record", () => {
  it("is the sha256 and the size, one per line, as the initrd's init reads them", () => {
    expect(rootRecord("ab".repeat(32), 58556416)).toBe(
      `sha256=${"ab".repeat(32)}\nbytes=58556416\n`,
    );
  });
  it("refuses anything that is not a hash and a size", () => {
    expect(() => rootRecord("AB".repeat(32), 1)).toThrow(/bad root image record/);
    expect(() => rootRecord("ab".repeat(31), 1)).toThrow(/bad root image record/);
    expect(() => rootRecord("ab".repeat(32), 0)).toThrow(/bad root image record/);
  });
  it("the initrd scripts are shellcheck-clean POSIX sh", () => {
    for (const a of ["netboot/init", "netboot/udhcpc.script"]) {
      const r = spawnSync("shellcheck", ["-s", "sh", asset(a)], { encoding: "utf8" });
      expect(r.error, "shellcheck is installed by scripts/test").toBeUndefined();
      expect(r.stdout, a).toBe("");
    }
  });
});

describe("console watcher and the netboot initrd", () => {
  it("fails at once on a kiln-netboot FAILED line, with the whole line", async () => {
    const w = new ConsoleWatcher();
    const p = w.wait(60_000);
    w.feed("kiln-netboot: fetching http://10.0.2.2:1/root.squashfs\r\n");
    w.feed("kiln-netboot: FAILED: root.squashfs sha256 1234");
    // Half a line is not yet the reason.
    expect(w.state.state).toBe("booting");
    w.feed(" does not match the build's 5678\r\n");
    expect(await p).toEqual({
      state: "failed",
      reason:
        "netboot failed: kiln-netboot: FAILED: root.squashfs sha256 1234 does not match the build's 5678",
    });
  });
});

// The handler as RAUC runs it, with its paths moved into a scratch directory
// and the verity read pointed at /dev/null: only the version gate is judged.
describe("RAUC pre-install handler: no downgrades", () => {
  const dir = mkdtempSync(join(tmpdir(), "kiln-preinstall-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const allow = join(dir, "allow-downgrade");
  const handler = join(dir, "rauc-pre-install");
  writeFileSync(
    handler,
    readFileSync(asset("kiln-update/rauc-pre-install"), "utf8")
      .replace("/etc/kiln/release", join(dir, "release"))
      .replace("/run/kiln/allow-downgrade", allow)
      .replace('findmnt -n -o SOURCE --target "$RAUC_BUNDLE_MOUNT_POINT"', "echo /dev/null"),
  );
  mkdirSync(join(dir, "bundle"));
  const install = (bundle: string, running: string) => {
    writeFileSync(
      join(dir, "bundle/manifest.raucm"),
      `[update]\ncompatible=kiln-it-ab\nversion=${bundle}\n\n[bundle]\nformat=verity\n\n[image.rootfs]\nfilename=rootfs.tar\n`,
    );
    writeFileSync(join(dir, "release"), `NAME=ab\nVERSION=${running}\nCOMPATIBLE=kiln-it-ab\n`);
    const r = spawnSync("sh", [handler], {
      encoding: "utf8",
      env: { PATH: process.env.PATH, RAUC_BUNDLE_MOUNT_POINT: join(dir, "bundle") },
    });
    return { code: r.status, err: r.stderr };
  };

  it("is shellcheck-clean POSIX sh", () => {
    const r = spawnSync("shellcheck", ["-s", "sh", asset("kiln-update/rauc-pre-install")], {
      encoding: "utf8",
    });
    expect(r.error).toBeUndefined();
    expect(r.stdout).toBe("");
  });
  it("refuses an older version, saying how to allow it", () => {
    const r = install("0.9", "2.0");
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      `kiln: refusing the bundle: bundle version 0.9 is older than the running 2.0 (to allow it once: touch ${allow})`,
    );
    // Debian's order, not the alphabet's: 1.10 is newer than 1.9, 2.0~rc1 older than 2.0.
    expect(install("1.9", "1.10").code).toBe(1);
    expect(install("2.0~rc1", "2.0").code).toBe(1);
  });
  it("installs the same or a newer version", () => {
    expect(install("2.0", "2.0")).toEqual({ code: 0, err: "" });
    expect(install("1.10", "1.9")).toEqual({ code: 0, err: "" });
    expect(install("2.0", "2.0~rc1")).toEqual({ code: 0, err: "" });
  });
  it("installs an older version once when the operator allows it, using the allowance up", () => {
    writeFileSync(allow, "");
    const r = install("0.9", "2.0");
    expect(r.code).toBe(0);
    expect(r.err).toContain(`installing although bundle version 0.9 is older than the running 2.0`);
    expect(existsSync(allow)).toBe(false);
    expect(install("0.9", "2.0").code).toBe(1);
  });
  it("refuses when either version is missing", () => {
    expect(install("", "2.0").err).toContain("cannot compare bundle version 'none'");
    expect(install("2.0", "").code).toBe(1);
  });
});

describe("bundle versions", () => {
  it("are what the device can compare and write down", () => {
    for (const v of ["2.0", "1.0~rc1", "2026.12.02+build3", "1:2.0-1"])
      expect(VERSION_RE.test(v), v).toBe(true);
    for (const v of ["", "2.0\ncompatible=x", "-1", "2 0", "../x", "a".repeat(65)])
      expect(VERSION_RE.test(v), JSON.stringify(v)).toBe(false);
  });
});

describe("kiln bundle --version", () => {
  it("is the bundle's option, not kiln's own --version", async () => {
    const out: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((c: string) => out.push(String(c)) > 0) as typeof process.stdout.write;
    try {
      const code = await main([
        "node",
        "kiln",
        "bundle",
        "/nonexistent",
        "--key",
        "k",
        "--cert",
        "c",
        "--version",
        "0.9",
        "--json",
      ]);
      // It got as far as the bundle's source, instead of printing kiln's version and exiting 0.
      expect(code).not.toBe(0);
      expect(out.join("")).not.toContain("0.1.0");
    } finally {
      process.stdout.write = write;
    }
  });
});
