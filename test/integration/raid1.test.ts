import { createHash } from "node:crypto";
import { closeSync, openSync, readFileSync, readSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readMd10 } from "../../src/image/mdraid.js";
import { kiln, ours, sharedBuild } from "./helpers.js";

// One build of a mirrored root (two disks), booted three ways: both disks, disk 2
// alone (under BIOS, so disk 2's own GRUB is the one that boots), and disk 1 with a
// blank disk that the documented command makes a mirror again.
const SPEC = "test/integration/specs/raid1.yaml";
let dir: string;
let manifest: {
  artifacts: { format: string; path: string; size: number; disk?: number }[];
  disk: {
    partitions: { name: string; offset: number; bytes: number }[];
    mirror: { array: string; dataBytes: number };
  };
};

beforeAll(() => {
  dir = sharedBuild(SPEC);
  manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
}, 1_800_000);

interface Target {
  ready: boolean;
  bootError?: string;
  readySeconds: number | null;
  results: { name: string; passed: boolean; actual: string; stdout?: string }[];
}

/** `kiln test` on one target with the given disks; the report and what each check printed. */
function boot(on: "uefi" | "bios", disks?: string) {
  const t0 = Date.now();
  const r = kiln(["test", dir, "--on", on, "--json", ...(disks ? ["--disks", disks] : [])]);
  const seconds = Math.round((Date.now() - t0) / 1000);
  const report = JSON.parse(r.stdout) as { ok: boolean; targets: Target[] };
  const t = report.targets[0]!;
  console.log(`raid1 ${on} --disks ${disks ?? "all"}: ${seconds}s (ready in ${t.readySeconds}s)`);
  const failed = t.results.filter((c) => !c.passed).map((c) => `${c.name}: ${c.actual}`);
  const out = (name: string) => t.results.find((c) => c.name === name)?.stdout ?? "";
  return { code: r.code, t, failed, out, stderr: r.stderr };
}

/** sha256 of `bytes` of a file from `offset`. */
function sha(file: string, offset: number, bytes: number): string {
  const h = createHash("sha256");
  const fd = openSync(file, "r");
  const buf = Buffer.alloc(1024 * 1024);
  try {
    for (let at = 0; at < bytes; at += buf.length) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, bytes - at), offset + at);
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}

describe("disk.layout: raid1", () => {
  it("writes one image per disk, numbered in the manifest, members of one array", async () => {
    const disks = manifest.artifacts.filter((a) => a.format === "disk");
    expect(disks.map((a) => [a.path, a.disk])).toEqual([
      ["raid1.raw", 1],
      ["raid1-disk2.raw", 2],
    ]);
    const part = (n: string) => manifest.disk.partitions.find((p) => p.name === n)!;
    const [a, b] = disks.map((d) => join(dir, d.path)) as [string, string];
    const root = part("root");
    const sb = [
      await readMd10(a, root.offset, root.bytes),
      await readMd10(b, root.offset, root.bytes),
    ];
    expect(sb.map((s) => [s.arrayUuid, s.index, s.members])).toEqual([
      [manifest.disk.mirror.array, 0, 2],
      [manifest.disk.mirror.array, 1, 2],
    ]);
    // The same filesystem on both members, and the same ESP: each disk boots alone.
    const data = sb[0]!.dataBytes;
    expect(sha(a, root.offset, data)).toBe(sha(b, root.offset, data));
    expect(sha(a, part("esp").offset, part("esp").bytes)).toBe(
      sha(b, part("esp").offset, part("esp").bytes),
    );
  });

  it("boots with both disks: the root on md0, in sync", () => {
    const r = boot("uefi");
    expect(r.t.bootError).toBeUndefined();
    expect(r.failed).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.out("mirror state")).toMatch(/\[2\/2\] \[UU\]/);
    expect(r.out("blank disk re-added")).not.toMatch(/replaced/);
  });

  it("boots from disk 2 alone (its own BIOS GRUB), degraded", () => {
    const r = boot("bios", "2");
    expect(r.t.bootError).toBeUndefined();
    expect(r.failed).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.out("mirror state")).toMatch(/\[2\/1\] \[_U\]/);
  });

  it("boots from disk 1 without its mirror, degraded, and re-adds a blank disk with one command", () => {
    const r = boot("uefi", "1,blank");
    expect(r.t.bootError).toBeUndefined();
    expect(r.failed).toEqual([]);
    expect(r.code).toBe(0);
    // Before the replacement: disk 1 alone.
    expect(r.out("mirror state")).toMatch(/\[2\/1\] \[U_\]/);
    // After: the new disk's ESP and boot code are disk 1's, and md resynced it.
    const after = r.out("blank disk re-added");
    expect(after).toMatch(/^replaced: BIOS boot partition, ESP and MBR boot code copied$/m);
    expect(after).toMatch(/vdb3\[\d\]/);
    expect(after).toMatch(/\[2\/2\] \[UU\]/);
    expect(ours("qemu-system-x86_64", { exact: true })).toEqual([]);
  });
});
