import { chmod, mkdir, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Layout, Partition } from "../../image/gpt.js";
import {
  md10Superblock,
  md10SuperOffset,
  mdUuidText,
  writeMd10Members,
} from "../../image/mdraid.js";
import { readAsset } from "../../util/assets.js";
import { exec } from "../../util/exec.js";
import { derivedHex, derivedUuid } from "../../util/hash.js";
import type { BuildContext } from "../context.js";

/** Behind a mirror member's filesystem: the md 1.0 superblock, 8-12 KiB from the end. */
export const MD_RESERVE = 64 * 1024;

/** The md array's name (mdadm shows name=root); the kernel device is /dev/md0. */
export const MIRROR_NAME = "root";

/**
 * mdadm.conf for the mirrored root. The ARRAY line (by UUID) is what the
 * initrd assembles; HOMEHOST <ignore> keeps the array's name whatever the
 * machine's host name is; MAILADDR keeps mdadm's monitor running (it
 * refuses to start without somewhere to report).
 */
export function mdadmConf(arrayUuid: string, members: number): string {
  return [
    "# Written by kiln: the root file system is an md RAID1 across the disks (disk.layout: raid1).",
    "# A missing disk: the initrd starts the array degraded after ~20 s (2/3 of max(30, rootdelay=)).",
    "# A replacement disk: kiln-raid-replace /dev/NEW",
    "HOMEHOST <ignore>",
    `ARRAY /dev/md0 metadata=1.0 num-devices=${members} UUID=${mdUuidText(Buffer.from(arrayUuid, "hex"))} name=${MIRROR_NAME}`,
    "MAILADDR root",
    "",
  ].join("\n");
}

/**
 * The image's side of a mirrored root: the array's UUID is chosen here,
 * before the initrd is made (which carries mdadm.conf), and the disk step
 * writes the md superblocks with it; the replacement command goes in too.
 */
export async function mirrorStep(ctx: BuildContext): Promise<void> {
  const uuid = derivedHex(ctx.seed, "md:array", 16);
  ctx.facts.mirrorUuid = uuid;
  await mkdir(join(ctx.root, "etc/mdadm"), { recursive: true });
  await writeFile(join(ctx.root, "etc/mdadm/mdadm.conf"), mdadmConf(uuid, ctx.spec.disk.mirrors));
  const script = join(ctx.root, "usr/sbin/kiln-raid-replace");
  await writeFile(script, readAsset("kiln-raid/kiln-raid-replace"));
  await chmod(script, 0o755);
}

/** How many disk images the spec's layout writes. */
export function mirrorsOf(spec: BuildContext["spec"]): number {
  return spec.disk.layout === "raid1" ? spec.disk.mirrors : 1;
}

/** `NAME.raw`, `NAME-disk2.raw`, …: the images of a mirrored root, in member order. */
export function mirrorImages(stage: string, name: string, members: number, ext = "raw"): string[] {
  return Array.from({ length: members }, (_, i) =>
    join(stage, i === 0 ? `${name}.${ext}` : `${name}-disk${i + 1}.${ext}`),
  );
}

/**
 * Make the other disks of a mirror from the first, which is complete
 * (filesystems, GRUB): byte copies, so the filesystem is the same on every
 * member and each disk boots by itself, the ESP's volume id included (the
 * GRUB core on every disk looks the ESP up by it, so it finds whichever
 * disk is there). Each disk then gets its own GPT identifiers and each
 * member its own md superblock.
 */
export async function writeMirrors(
  ctx: BuildContext,
  first: string,
  layout: Layout,
  root: Partition,
): Promise<{ images: string[]; record: Record<string, unknown> }> {
  const { spec } = ctx;
  const images = mirrorImages(ctx.stage, spec.name, spec.disk.mirrors);
  const arrayUuid = ctx.facts.mirrorUuid;
  if (!arrayUuid) throw new Error("the configure step did not choose the mirror's array UUID");
  const time = ctx.epoch ?? Math.floor(Date.now() / 1000);
  const dataBytes = md10SuperOffset(root.bytes);
  const members: Record<string, unknown>[] = [];
  for (const [i, image] of images.entries()) {
    const partUuids = layout.partitions.map((p) =>
      i === 0 ? p.uuid : derivedUuid(ctx.seed, `disk${i + 1}:${p.name}`),
    );
    if (i > 0) {
      await exec("cp", ["--sparse=always", first, image]);
      // Only the identifiers: a new table would rewrite the protective MBR and BIOS GRUB's boot.img in it.
      await exec("sfdisk", [
        "--quiet",
        "--no-reread",
        "--no-tell-kernel",
        "--disk-id",
        image,
        derivedUuid(ctx.seed, `disk${i + 1}`),
      ]);
      for (const [n, uuid] of partUuids.entries())
        await exec("sfdisk", [
          "--quiet",
          "--no-reread",
          "--no-tell-kernel",
          "--part-uuid",
          image,
          String(n + 1),
          uuid,
        ]);
    }
    const deviceUuid = Buffer.from(derivedHex(ctx.seed, `md:member${i + 1}`, 16), "hex");
    await writeMd10Members([
      {
        image,
        offset: root.offset,
        memberBytes: root.bytes,
        superblock: md10Superblock({
          arrayUuid: Buffer.from(arrayUuid, "hex"),
          deviceUuid,
          name: MIRROR_NAME,
          index: i,
          members: images.length,
          dataBytes,
          memberBytes: root.bytes,
          time,
        }),
      },
    ]);
    members.push({
      image: basename(image),
      partitions: partUuids,
      device: mdUuidText(deviceUuid),
    });
  }
  return {
    images,
    record: { array: mdUuidText(Buffer.from(arrayUuid, "hex")), dataBytes, members },
  };
}
