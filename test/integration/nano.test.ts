import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kiln } from "./helpers.js";

// One real build of examples/nano.yaml (its root is the minimal example's, cached).
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-nano-"));
const DIR = join(OUT, "nano");
let manifest: {
  packages: { name: string }[];
  sizes: { installed: number };
  artifacts: { format: string; path: string; size: number }[];
  tests: unknown[];
};

afterAll(() => rmSync(OUT, { recursive: true, force: true }));

beforeAll(() => {
  const r = kiln(["build", "examples/nano.yaml", "--output", DIR]);
  if (r.code !== 0) throw new Error(`build failed:\n${r.stderr}`);
  manifest = JSON.parse(readFileSync(join(DIR, "manifest.json"), "utf8"));
});

describe("kiln build examples/nano.yaml (profile nano)", () => {
  it("lists what stayed: the services' packages, no package manager", () => {
    const names = manifest.packages.map((p) => p.name);
    expect(names).toEqual(expect.arrayContaining(["openssh-server", "systemd", "sudo", "libc6"]));
    for (const gone of ["apt", "dpkg", "debconf", "perl-base", "libapt-pkg6.0", "libstdc++6"])
      expect(names).not.toContain(gone);
    expect(manifest.sizes.installed).toBeLessThanOrEqual(100 * 2 ** 20);
    const qcow2 = manifest.artifacts.find((a) => a.format === "qcow2")!;
    console.log(
      `nano: installed ${(manifest.sizes.installed / 2 ** 20).toFixed(1)} MiB, qcow2 ${(qcow2.size / 2 ** 20).toFixed(1)} MiB, ${names.length} packages`,
    );
  });

  it("the disk has no dpkg database, apt or perl, and keeps the package list", () => {
    const raw = join(DIR, manifest.artifacts.find((a) => a.format === "disk")!.path);
    const root = JSON.parse(
      execFileSync("sfdisk", ["--json", raw]).toString(),
    ).partitiontable.partitions.find((p: { name: string }) => p.name === "root-a");
    const fs = `${raw}?offset=${root.start * 512}`;
    const ls = (p: string) =>
      execFileSync("debugfs", ["-R", `ls -l ${p}`, fs], {
        stdio: ["ignore", "pipe", "pipe"],
      }).toString();
    expect(ls("/var/lib")).not.toMatch(/\sdpkg\s*$/m);
    expect(ls("/usr/bin")).not.toMatch(/\s(apt-get|perl|dpkg)\s*$/m);
    expect(ls("/usr/bin")).toMatch(/\sssh-keygen\s*$/m);
    const list = execFileSync("debugfs", ["-R", "cat /usr/lib/kiln/packages", fs], {
      stdio: ["ignore", "pipe", "ignore"],
    }).toString();
    expect(list).toMatch(/^openssh-server\t1:9\.\S+\t\d+$/m);
    expect(list.trim().split("\n")).toHaveLength(manifest.packages.length);
  });

  it("boots with BIOS and in nspawn, and passes the example's checks (ssh logs in, sudo, bus)", () => {
    const r = kiln(["test", DIR, "--on", "nspawn,bios", "--accel", "tcg", "--json"]);
    const targets = JSON.parse(r.stdout || "{}").targets ?? [];
    expect(targets.map((t: { target: string }) => t.target)).toEqual(["nspawn", "bios"]);
    for (const t of targets) {
      expect(t.ready, `${t.target}: ${r.stderr}\n${t.bootError ?? ""}`).toBe(true);
      const failed = t.results.filter((c: { passed: boolean }) => !c.passed);
      expect(failed, `${t.target}: ${JSON.stringify(failed)}`).toEqual([]);
      expect(t.results).toHaveLength(manifest.tests.length);
    }
    expect(r.code).toBe(0);
    console.log(`nano bios/tcg ready in ${targets[1].readySeconds} s`);
  });
});
