import { exec } from "../util/exec.js";
import { SECTOR } from "./gpt.js";

/**
 * Populate an ext4 filesystem from a directory straight into its place in a
 * disk image: no loop device, no mount. Features GRUB 2.06 cannot read are
 * turned off.
 */
export async function mkfsExt4(p: {
  image: string;
  offset: number;
  bytes: number;
  label: string;
  uuid: string;
  from?: string;
}): Promise<void> {
  const args = [
    "-q",
    "-F",
    "-t",
    "ext4",
    "-L",
    p.label,
    "-U",
    p.uuid,
    "-O",
    "^metadata_csum_seed,^orphan_file",
  ];
  args.push("-E", `offset=${p.offset},root_owner=0:0`, "-m", "1");
  if (p.from) args.push("-d", p.from);
  args.push(p.image, `${Math.floor(p.bytes / 1024)}k`);
  await exec("mkfs.ext4", args, { env: { E2FSPROGS_FAKE_TIME: undefined } });
}

/** A FAT32 ESP at its offset in the image; `volumeId` is 8 hex digits. */
export async function mkfsVfat(p: {
  image: string;
  offset: number;
  bytes: number;
  label: string;
  volumeId: string;
}): Promise<void> {
  await exec("mkfs.vfat", [
    "-F",
    "32",
    "-S",
    String(SECTOR),
    "-s",
    "1",
    "-n",
    p.label,
    "-i",
    p.volumeId,
    "--offset",
    String(p.offset / SECTOR),
    p.image,
    String(Math.floor(p.bytes / 1024)),
  ]);
}

/** Copy files onto a FAT filesystem inside an image with mtools. */
export async function fatPut(
  image: string,
  offset: number,
  files: { from: string; to: string }[],
): Promise<void> {
  const img = `${image}@@${offset}`;
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.to.split("/").filter(Boolean);
    for (let i = 1; i < parts.length; i++) dirs.add(`/${parts.slice(0, i).join("/")}`);
  }
  const env = { MTOOLS_SKIP_CHECK: "1" };
  for (const d of [...dirs].sort())
    await exec("mmd", ["-D", "s", "-i", img, `::${d}`], { env, okCodes: [0, 1] });
  for (const f of files) await exec("mcopy", ["-o", "-i", img, f.from, `::${f.to}`], { env });
}
