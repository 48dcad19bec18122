import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { planPartitions } from "../../src/builder/steps/disk.js";
import { growFiles } from "../../src/builder/steps/grow.js";
import { mdadmConf, mirrorImages, mirrorsOf } from "../../src/builder/steps/mirror.js";
import { artifactsOf } from "../../src/check/run.js";
import { parseDisks } from "../../src/cli/test.js";
import { loadSpec } from "../../src/config/load.js";
import { checkRules } from "../../src/config/rules.js";
import { layoutDisk, MIB, PART_TYPES, sfdiskScript } from "../../src/image/gpt.js";
import {
  md1Checksum,
  md10Superblock,
  md10SuperOffset,
  parseMd10,
  readMd10,
  writeMd10Members,
} from "../../src/image/mdraid.js";
import { rootfsRecipe } from "../../src/plan/recipe.js";
import { mirrorRootInto } from "../../src/runtime/ephemeral.js";
import { qemuArgs } from "../../src/runtime/qemu.js";
import { SpecError } from "../../src/util/errors.js";
import { derivedUuid } from "../../src/util/hash.js";

const dir = mkdtempSync(join(tmpdir(), "kiln-raid1-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function spec(yaml: string) {
  const f = join(dir, `s${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(f, `name: r\n${yaml}`);
  return loadSpec(f).spec;
}
const raid = "disk: { layout: raid1 }\nkernel: { initrd: initramfs-tools }\n";

const member = {
  arrayUuid: Buffer.from("00112233445566778899aabbccddeeff", "hex"),
  deviceUuid: Buffer.alloc(16, 0x42),
  name: "root",
  index: 1,
  members: 2,
  dataBytes: 8 * MIB - 64 * 1024,
  memberBytes: 8 * MIB,
  time: 1767225600,
};

describe("md RAID1 superblock (metadata 1.0)", () => {
  it("sits 8 KiB from the member's end, rounded down to 4 KiB, as the kernel looks for it", () => {
    expect(md10SuperOffset(8 * MIB)).toBe(8 * MIB - 8192);
    expect(md10SuperOffset(8 * MIB + 512 * 5)).toBe(8 * MIB - 8192);
    expect(md10SuperOffset(8 * MIB + 512 * 12)).toBe(8 * MIB - 4096);
  });

  it("has the checksum mdadm --examine called correct for these fields", () => {
    // mdadm 4.2: "Checksum : 5f72d689 - correct", Array UUID 00112233:44556677:8899aabb:ccddeeff.
    const sb = md10Superblock(member);
    expect(sb.readUInt32LE(216).toString(16)).toBe("5f72d689");
    expect(md1Checksum(sb)).toBe(sb.readUInt32LE(216));
    expect(parseMd10(sb)).toEqual({
      arrayUuid: "00112233:44556677:8899aabb:ccddeeff",
      name: "root",
      index: 1,
      members: 2,
      dataBytes: 8 * MIB - 64 * 1024,
    });
  });

  it("refuses data that would overlap the superblock, and a flipped bit", () => {
    expect(() => md10Superblock({ ...member, dataBytes: 8 * MIB })).toThrow(/do not fit/);
    expect(() => md10Superblock({ ...member, index: 2 })).toThrow(/out of range/);
    const sb = md10Superblock(member);
    sb[40] = (sb[40] ?? 0) ^ 1;
    expect(() => parseMd10(sb)).toThrow(/checksum/);
  });

  it("is written at its place in an image and read back from there", async () => {
    const img = join(dir, "m.img");
    writeFileSync(img, Buffer.alloc(10 * MIB));
    const sb = md10Superblock(member);
    await writeMd10Members([{ image: img, offset: MIB, superblock: sb, memberBytes: 8 * MIB }]);
    expect((await readMd10(img, MIB, 8 * MIB)).index).toBe(1);
  });
});

describe("raid1 layout", () => {
  it("gives each disk BIOS boot, ESP and one Linux RAID member with room for the superblock", () => {
    const s = spec(raid);
    const parts = planPartitions(s, 300 * MIB, (l) => derivedUuid("seed", l));
    expect(parts.map((p) => [p.name, p.type])).toEqual([
      ["bios", PART_TYPES.bios],
      ["esp", PART_TYPES.esp],
      ["root", PART_TYPES.linuxRaid],
    ]);
    const root = layoutDisk(parts).partitions[2]!;
    // The filesystem (300 MiB) fits before the superblock.
    expect(md10SuperOffset(root.bytes)).toBeGreaterThanOrEqual(300 * MIB);
    // disk.size: the member takes what the disk leaves.
    const big = layoutDisk(
      planPartitions(s, 300 * MIB, (l) => derivedUuid("seed", l)),
      2048 * MIB,
    ).partitions[2]!;
    expect(big.bytes).toBeGreaterThan(1900 * MIB);
  });

  it("writes NAME.raw, NAME-disk2.raw, … and one image per mirror", () => {
    expect(mirrorsOf(spec(raid))).toBe(2);
    expect(
      mirrorsOf(spec("disk: { layout: raid1, mirrors: 3 }\nkernel: { initrd: initramfs-tools }\n")),
    ).toBe(3);
    expect(mirrorsOf(spec(""))).toBe(1);
    expect(mirrorImages("/s", "web", 3, "qcow2")).toEqual([
      "/s/web.qcow2",
      "/s/web-disk2.qcow2",
      "/s/web-disk3.qcow2",
    ]);
  });

  it("installs mdadm, names the array in mdadm.conf, and does not grow at boot", () => {
    const s = spec(raid);
    expect(rootfsRecipe(s).packages).toEqual(expect.arrayContaining(["mdadm", "fdisk"]));
    expect(rootfsRecipe(spec("")).packages).not.toContain("mdadm");
    expect(mdadmConf("00112233445566778899aabbccddeeff", 2)).toContain(
      "ARRAY /dev/md0 metadata=1.0 num-devices=2 UUID=00112233:44556677:8899aabb:ccddeeff name=root\n",
    );
    expect(growFiles(s)).toEqual({});
  });
});

describe("raid1 spec rules", () => {
  const errors = (yaml: string) => {
    try {
      return checkRules(spec(yaml)).errors.map((e) => `${e.path.join(".")}: ${e.message}`);
    } catch (err) {
      if (err instanceof SpecError) return err.diagnostics.map((d) => d.message);
      throw err;
    }
  };

  it("needs initramfs-tools: the tiny initrd cannot assemble md", () => {
    expect(errors("disk: { layout: raid1 }\n")).toEqual([
      expect.stringMatching(
        /^kernel\.initrd: disk\.layout: raid1 needs kernel\.initrd: initramfs-tools/,
      ),
    ]);
    expect(errors(raid)).toEqual([]);
  });

  it("refuses outputs made from a single disk (clouds, the installer ISO)", () => {
    expect(errors(`${raid}outputs: [disk, qcow2, iso]\n`)).toEqual([
      expect.stringMatching(/^outputs: disk\.layout: raid1 writes one image per disk; iso take/),
    ]);
  });

  it("refuses A/B updates and mirror counts outside 2-4", () => {
    expect(errors(`${raid}update: {}\n`)).toEqual(["update: A/B updates need disk.layout: ab"]);
    expect(() => spec("disk: { layout: raid1, mirrors: 5 }\n")).toThrow();
  });
});

describe("booting a mirror", () => {
  it("mirrors the root of one throw-away copy into another (the injected checks on both)", async () => {
    const disks = ["a.raw", "b.raw"].map((n) => join(dir, n));
    const root = layoutDisk([
      { name: "root", type: PART_TYPES.linuxRaid, uuid: randomUUID(), size: 4 * MIB },
    ]);
    const p = root.partitions[0]!;
    for (const [i, d] of disks.entries()) {
      writeFileSync(d, Buffer.alloc(root.diskBytes));
      execFileSync("sfdisk", ["--quiet", "--no-reread", "--no-tell-kernel", d], {
        input: sfdiskScript(root, randomUUID()),
      });
      const sb = md10Superblock({
        ...member,
        index: i,
        memberBytes: p.bytes,
        dataBytes: md10SuperOffset(p.bytes),
      });
      await writeMd10Members([
        { image: d, offset: p.offset, superblock: sb, memberBytes: p.bytes },
      ]);
    }
    const fd = openSync(disks[0]!, "r+");
    writeSync(fd, Buffer.from("injected"), 0, 8, p.offset + 2 * MIB + 7);
    closeSync(fd);
    await mirrorRootInto(disks[0]!, disks[1]!);
    const [a, b] = disks.map((d) => readFileSync(d));
    const data = md10SuperOffset(p.bytes);
    expect(
      a!.subarray(p.offset, p.offset + data).equals(b!.subarray(p.offset, p.offset + data)),
    ).toBe(true);
    expect(b!.includes("injected")).toBe(true);
    // Each member keeps its own superblock.
    expect((await readMd10(disks[1]!, p.offset, p.bytes)).index).toBe(1);
  });

  it("attaches every disk, the first as vda", () => {
    const args = qemuArgs({
      image: "/o/r.raw",
      disks: ["/o/r-disk2.qcow2"],
      firmware: "uefi",
      accel: "tcg",
      qmp: "/q",
    });
    expect(args.filter((a) => a.startsWith("file="))).toEqual([
      "file=/o/r.raw,if=virtio,format=raw,snapshot=on",
      "file=/o/r-disk2.qcow2,if=virtio,format=qcow2,snapshot=on",
    ]);
  });

  it("finds the disks of a build by number, and parses --disks", () => {
    writeFileSync(join(dir, "r.raw"), "");
    writeFileSync(join(dir, "r-disk2.raw"), "");
    const a = artifactsOf(dir, {
      name: "r",
      artifacts: [
        { format: "disk", path: "r-disk2.raw", disk: 2 },
        { format: "disk", path: "r.raw", disk: 1 },
      ],
    });
    expect(a.mirror).toEqual([join(dir, "r.raw"), join(dir, "r-disk2.raw")]);
    expect(parseDisks("1, blank")).toEqual([1, "blank"]);
    expect(() => parseDisks("0")).toThrow(/disk numbers/);
  });
});
