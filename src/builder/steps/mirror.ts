import { randomBytes } from "node:crypto";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { mdUuidText } from "../../image/mdraid.js";
import { readAsset } from "../../util/assets.js";
import type { BuildContext } from "../context.js";

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
  const uuid = randomBytes(16).toString("hex");
  ctx.facts.mirrorUuid = uuid;
  await mkdir(join(ctx.root, "etc/mdadm"), { recursive: true });
  await writeFile(join(ctx.root, "etc/mdadm/mdadm.conf"), mdadmConf(uuid, ctx.spec.disk.mirrors));
  const script = join(ctx.root, "usr/sbin/kiln-raid-replace");
  await writeFile(script, readAsset("kiln-raid/kiln-raid-replace"));
  await chmod(script, 0o755);
}
