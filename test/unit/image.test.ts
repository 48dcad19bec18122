import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { layoutDisk, MIB, PART_TYPES, sfdiskScript } from "../../src/image/gpt.js";
import { earlyConfig, grubConfig } from "../../src/image/grubcfg.js";
import { formatGrubenv, GRUBENV_SIZE, parseGrubenv } from "../../src/image/grubenv.js";

const dirs: string[] = [];
function scratch(): string {
  const d = mkdtempSync(join(tmpdir(), "kiln-unit-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const part = (name: string, size: number, grow = false) => ({
  name,
  type: PART_TYPES.linuxData,
  uuid: `uuid-${name}`,
  size,
  grow,
});

describe("GPT layout", () => {
  it("aligns every partition to 1 MiB and leaves room for the backup GPT", () => {
    const l = layoutDisk([
      part("bios", MIB),
      part("esp", 64 * MIB),
      part("root", 300 * MIB + 1, true),
    ]);
    expect(l.partitions.map((p) => [p.start, p.sectors])).toEqual([
      [2048, 2048],
      [4096, 64 * 2048],
      [4096 + 64 * 2048, 301 * 2048],
    ]);
    for (const p of l.partitions) expect(p.start % 2048).toBe(0);
    const last = l.partitions.at(-1)!;
    expect(last.start + last.sectors).toBeLessThanOrEqual(l.diskBytes / 512 - 33);
  });

  it("grows the grow partition to fill a given disk size", () => {
    const l = layoutDisk(
      [part("esp", 64 * MIB), part("root", 200 * MIB), part("data", 10 * MIB, true)],
      1024 * MIB,
    );
    expect(l.diskBytes).toBe(1024 * MIB);
    const data = l.partitions.at(-1)!;
    expect(data.offset + data.bytes).toBeLessThanOrEqual(1024 * MIB - 33 * 512);
    expect(data.bytes).toBeGreaterThan(700 * MIB);
  });

  it("refuses a disk too small for its partitions", () => {
    expect(() => layoutDisk([part("root", 500 * MIB, true)], 100 * MIB)).toThrow(/too small/);
  });

  it("writes an sfdisk script that sfdisk accepts", () => {
    const l = layoutDisk([part("esp", 8 * MIB), part("root", 16 * MIB, true)]);
    const script = sfdiskScript(l, "11111111-2222-3333-4444-555555555555").replace(/uuid-\w+/g, "");
    const dir = scratch();
    const img = join(dir, "d.img");
    writeFileSync(img, Buffer.alloc(0));
    execFileSync("truncate", ["-s", String(l.diskBytes), img]);
    execFileSync("sfdisk", ["--quiet", img], { input: script.replace(/, uuid=,/g, ",") });
    const table = JSON.parse(execFileSync("sfdisk", ["--json", img]).toString()).partitiontable;
    expect(table.partitions.map((p: { start: number; name: string }) => [p.start, p.name])).toEqual(
      [
        [2048, "esp"],
        [2048 + 8 * 2048, "root"],
      ],
    );
  });
});

describe("grubenv", () => {
  it("round-trips and is exactly 1024 bytes", () => {
    const b = formatGrubenv({ kiln_slot: "b", note: "a\\b\nc" });
    expect(b.length).toBe(GRUBENV_SIZE);
    expect(Object.fromEntries(parseGrubenv(b))).toEqual({ kiln_slot: "b", note: "a\\b\nc" });
  });

  it("agrees with grub-editenv in both directions", () => {
    const dir = scratch();
    const f = join(dir, "grubenv");
    writeFileSync(f, formatGrubenv({ kiln_slot: "a" }));
    execFileSync("grub-editenv", [f, "set", "tries=3"]);
    expect(Object.fromEntries(parseGrubenv(readFileSync(f)))).toEqual({
      kiln_slot: "a",
      tries: "3",
    });
    expect(execFileSync("grub-editenv", [f, "list"]).toString()).toBe("kiln_slot=a\ntries=3\n");
    expect(readFileSync(f).length).toBe(1024);
  });
});

describe("grub.cfg", () => {
  const cfg = grubConfig({
    slots: [
      { id: "a", title: "sys (slot A)", fsUuid: "aaaa" },
      { id: "b", title: "sys (slot B)", fsUuid: "bbbb" },
    ],
    cmdline: "console=ttyS0,115200 quiet",
    serial: true,
    timeoutSeconds: 1,
  });

  it("has one entry per slot, each booting its own root by filesystem UUID", () => {
    expect(cfg).toContain("menuentry 'sys (slot A)' --id slot-a {");
    expect(cfg).toContain("  linux /vmlinuz root=UUID=aaaa rw console=ttyS0,115200 quiet");
    expect(cfg).toContain("  search --no-floppy --fs-uuid --set=root bbbb");
    expect(cfg).toContain("load_env -f ($esp)/grub/grubenv");
    expect(cfg).toContain("set default=slot-$kiln_slot");
  });

  it("boots the chosen slot straight away without a menu timeout, the menu only as a fallback", () => {
    const direct = grubConfig({
      slots: [
        { id: "a", title: "sys (slot A)", fsUuid: "aaaa" },
        { id: "b", title: "sys (slot B)", fsUuid: "bbbb" },
      ],
      cmdline: "quiet",
      serial: false,
      timeoutSeconds: 0,
    });
    expect(direct).toContain('if [ "$kiln_slot" = a ]; then kiln_boot_a; boot');
    expect(direct).toContain('elif [ "$kiln_slot" = b ]; then kiln_boot_b; boot');
    // The direct boot comes after every entry, so a failed one still has the menu.
    expect(direct.lastIndexOf("menuentry")).toBeLessThan(direct.indexOf("then kiln_boot_a"));
    expect(cfg).not.toContain("then kiln_boot_a; boot");
  });

  it("is a script GRUB's own parser accepts", () => {
    // grub-script-check ships with grub-common, which every disk build needs.
    for (const timeoutSeconds of [0, 1]) {
      const r = spawnSync("grub-script-check", [], {
        input: grubConfig({
          slots: [{ id: "a", title: "sys", fsUuid: "aaaa" }],
          cmdline: "",
          serial: true,
          timeoutSeconds,
        }),
      });
      expect(r.error).toBeUndefined();
      expect(r.status, String(r.stderr)).toBe(0);
    }
  });

  it("the embedded config finds the ESP by volume id", () => {
    expect(earlyConfig("ABCD-1234", false)).toBe(
      "search --no-floppy --fs-uuid --set=root ABCD-1234\nset prefix=($root)/grub\nconfigfile ($root)/grub/grub.cfg\n",
    );
  });
});
