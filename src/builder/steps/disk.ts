import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseSize } from "../../config/schema.js";
import { fatPut, mkfsExt4, mkfsVfat } from "../../image/fs.js";
import {
  layoutDisk,
  MIB,
  PART_TYPES,
  type PartitionRequest,
  sfdiskScript,
} from "../../image/gpt.js";
import { installBiosGrub, makeEfiImage } from "../../image/grub.js";
import { abGrubConfig, grubConfig, type Slot } from "../../image/grubcfg.js";
import { formatGrubenv } from "../../image/grubenv.js";
import { GRUB_EFI } from "../../image/grubmods.js";
import { md10SuperOffset } from "../../image/mdraid.js";
import { KilnError } from "../../util/errors.js";
import { exec } from "../../util/exec.js";
import { derivedHex, derivedUuid } from "../../util/hash.js";
import type { BuildContext } from "../context.js";
import { MD_RESERVE, writeMirrors } from "./mirror.js";

/** Room for the ext4 metadata and journal, and for the system to write logs and state. */
export function rootFsBytes(usedBytes: number): number {
  return Math.ceil((usedBytes * 1.3 + 160 * MIB) / MIB) * MIB;
}

/**
 * A raw GPT disk assembled without loop devices or mounts: each filesystem
 * is made at its offset inside the image file, GRUB for UEFI goes to the
 * removable-media path on the ESP, GRUB for BIOS into the BIOS boot partition.
 */
export async function diskStep(ctx: BuildContext): Promise<string | string[]> {
  const { spec } = ctx;
  const image = join(ctx.stage, `${spec.name}.raw`);
  const used = ctx.facts.installedBytes ?? 0;
  const rootBytes = rootFsBytes(used);
  const ab = spec.disk.layout === "ab";
  // Derived, not random: the same spec and root give the same disk, byte for byte.
  const id = (label: string) => derivedUuid(ctx.seed, label);
  const uuids = { a: id("fs:root-a"), b: id("fs:root-b"), data: id("fs:data") };
  const espVolume = derivedHex(ctx.seed, "fs:esp", 4).toUpperCase();
  const raid = spec.disk.layout === "raid1";

  const parts = planPartitions(spec, rootBytes, id);
  let layout: ReturnType<typeof layoutDisk>;
  try {
    layout = layoutDisk(parts, spec.disk.size ? parseSize(spec.disk.size) : undefined);
  } catch (err) {
    throw new KilnError("DISK_TOO_SMALL", (err as Error).message, {
      hint: "raise disk.size or leave it out",
    });
  }
  const part = (name: string) => layout.partitions.find((p) => p.name === name)!;

  const fh = await open(image, "w");
  await fh.truncate(layout.diskBytes);
  await fh.close();
  await exec("sfdisk", ["--quiet", "--no-reread", "--no-tell-kernel", image], {
    input: sfdiskScript(layout, id("disk")),
  });

  const esp = part("esp");
  await mkfsVfat({
    image,
    offset: esp.offset,
    bytes: esp.bytes,
    label: "ESP",
    volumeId: espVolume,
  });
  const a = part(raid ? "root" : "root-a");
  await mkfsExt4({
    image,
    offset: a.offset,
    // A mirror member ends in its md superblock; the filesystem is the array's data before it.
    bytes: raid ? md10SuperOffset(a.bytes) : a.bytes,
    label: raid ? "root" : "root-a",
    uuid: uuids.a,
    from: ctx.root,
    hashSeed: id("hash:root-a"),
    ...(ctx.epoch !== undefined ? { epoch: ctx.epoch } : {}),
  });
  if (ab) {
    const fixed = { ...(ctx.epoch !== undefined ? { epoch: ctx.epoch } : {}) };
    const b = part("root-b");
    await mkfsExt4({
      image,
      offset: b.offset,
      bytes: b.bytes,
      label: "root-b",
      uuid: uuids.b,
      hashSeed: id("hash:root-b"),
      ...fixed,
    });
    const d = part("data");
    await mkfsExt4({
      image,
      offset: d.offset,
      bytes: d.bytes,
      label: "data",
      uuid: uuids.data,
      hashSeed: id("hash:data"),
      ...fixed,
    });
  }

  const slots: Slot[] = [
    { id: "a", title: `${spec.name} ${spec.version} (slot A)`, fsUuid: uuids.a },
  ];
  // On arm64 the firmware's own console is the serial port (AAVMF, and arm64 servers'
  // UEFI): GRUB writes there through it, and a serial terminal of its own would double it.
  const serial = spec.console.serial !== "" && spec.architecture !== "arm64";
  const partNumber = (name: string) => layout.partitions.findIndex((p) => p.name === name) + 1;
  const tmp = await mkdtemp(join(ctx.work, "esp-"));
  try {
    if (ab) {
      await writeFile(
        join(tmp, "grub.cfg"),
        abGrubConfig({
          title: spec.name,
          partA: partNumber("root-a"),
          partB: partNumber("root-b"),
          cmdline: consoleCmdline(spec),
          tries: spec.update?.tries ?? 3,
          serial,
          timeoutSeconds: spec.disk.menu_timeout,
        }),
      );
      // Slot A holds this build and is good; slot B is empty until the first update.
      await writeFile(
        join(tmp, "grubenv"),
        formatGrubenv({ ORDER: "A B", A_OK: "1", A_TRY: "0", B_OK: "0", B_TRY: "0" }),
      );
    } else {
      await writeFile(
        join(tmp, "grub.cfg"),
        grubConfig({
          slots,
          cmdline: kernelCmdline(spec),
          serial,
          timeoutSeconds: spec.disk.menu_timeout,
        }),
      );
      await writeFile(join(tmp, "grubenv"), formatGrubenv({ kiln_slot: "a" }));
    }
    const files = [
      { from: join(tmp, "grub.cfg"), to: "/grub/grub.cfg" },
      { from: join(tmp, "grubenv"), to: "/grub/grubenv" },
    ];
    if (spec.disk.firmware.includes("uefi")) {
      const removable = GRUB_EFI[spec.architecture]!.removable;
      await makeEfiImage(join(tmp, removable), espFsUuid(espVolume), serial, spec.architecture);
      files.push({ from: join(tmp, removable), to: `/EFI/BOOT/${removable}` });
    }
    await fatPut(image, esp.offset, files, ctx.epoch);
    const bios = layout.partitions.find((p) => p.name === "bios");
    if (bios) await installBiosGrub(image, espFsUuid(espVolume), serial, bios.offset + bios.bytes);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  const mirror = raid ? await writeMirrors(ctx, image, layout, a) : undefined;
  ctx.facts.disk = {
    layout: spec.disk.layout,
    bytes: layout.diskBytes,
    partitions: layout.partitions.map((p) => ({
      name: p.name,
      uuid: p.uuid,
      offset: p.offset,
      bytes: p.bytes,
    })),
    filesystems: {
      [raid ? "root" : "root-a"]: uuids.a,
      ...(ab ? { "root-b": uuids.b, data: uuids.data } : {}),
      esp: espFsUuid(espVolume),
    },
    ...(mirror ? { mirror: mirror.record } : {}),
  };
  return mirror ? mirror.images : image;
}

/**
 * The partitions of one disk. A mirrored root's disks all have this one
 * layout; its root partition is an md member (Linux RAID type) with room
 * for the superblock behind the filesystem, and does not grow at boot
 * (growing a mirror means growing every member, then the array, then the
 * filesystem).
 */
export function planPartitions(
  spec: BuildContext["spec"],
  rootBytes: number,
  id: (label: string) => string,
): PartitionRequest[] {
  const ab = spec.disk.layout === "ab";
  const raid = spec.disk.layout === "raid1";
  const rootType = spec.architecture === "arm64" ? PART_TYPES.rootArm64 : PART_TYPES.rootX86_64;
  const parts: PartitionRequest[] = [];
  if (spec.disk.firmware.includes("bios"))
    parts.push({ name: "bios", type: PART_TYPES.bios, uuid: id("part:bios"), size: MIB });
  parts.push({
    name: "esp",
    type: PART_TYPES.esp,
    uuid: id("part:esp"),
    size: parseSize(spec.disk.esp_size),
  });
  if (raid) {
    parts.push({
      name: "root",
      type: PART_TYPES.linuxRaid,
      uuid: id("part:root"),
      size: rootBytes + MD_RESERVE,
      // Only with disk.size: the root then takes what the disk leaves.
      grow: true,
    });
    return parts;
  }
  parts.push({
    name: "root-a",
    type: rootType,
    uuid: id("part:root-a"),
    size: rootBytes,
    grow: !ab,
  });
  if (ab) {
    parts.push({ name: "root-b", type: rootType, uuid: id("part:root-b"), size: rootBytes });
    parts.push({
      name: "data",
      type: PART_TYPES.linuxData,
      uuid: id("part:data"),
      size: parseSize(spec.disk.data_size),
      grow: true,
    });
  }
  return parts;
}

/** GRUB and blkid show a FAT volume id as XXXX-XXXX. */
function espFsUuid(volumeId: string): string {
  return `${volumeId.slice(0, 4)}-${volumeId.slice(4)}`;
}

export function kernelCmdline(spec: BuildContext["spec"]): string {
  return [consoleCmdline(spec), spec.kernel.cmdline].filter(Boolean).join(" ");
}

/** The kernel arguments that belong to the machine rather than to a version of the system. */
export function consoleCmdline(spec: BuildContext["spec"]): string {
  const consoles = spec.console.serial ? `console=tty0 console=${spec.console.serial}` : "";
  // Each status line the kernel or PID 1 writes to a serial console waits on an emulated
  // UART: direct kernel boot to login, TCG, 26.8 s without `quiet`, 22.9 s with it.
  return [consoles, spec.console.quiet ? "quiet" : ""].filter(Boolean).join(" ");
}
