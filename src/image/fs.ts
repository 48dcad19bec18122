import { copyFile, mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { exec } from "../util/exec.js";
import { clampTimes } from "../util/fsx.js";
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
  /** The directory-index hash seed (a UUID); random when absent. */
  hashSeed?: string;
  /** SOURCE_DATE_EPOCH: every inode's times and the superblock's are this (or older). */
  epoch?: number;
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
  const seed = p.hashSeed ? `,hash_seed=${p.hashSeed}` : "";
  args.push("-E", `offset=${p.offset},root_owner=0:0${seed}`, "-m", "1");
  if (p.from) args.push("-d", p.from);
  args.push(p.image, `${Math.floor(p.bytes / 1024)}k`);
  const fakeTime = p.epoch === undefined ? undefined : String(p.epoch);
  await exec("mkfs.ext4", args, { env: { E2FSPROGS_FAKE_TIME: fakeTime } });
  if (p.epoch !== undefined) await pinInodeTimes(p.image, p.offset, p.epoch);
}

/**
 * mke2fs -d copies each file's atime and ctime from the host, which no build
 * can choose (reading a file moves its atime; ctime is always "now"): set
 * both to the epoch on every inode in use, with debugfs, on the image.
 */
async function pinInodeTimes(image: string, offset: number, epoch: number): Promise<void> {
  const at = `${image}?offset=${offset}`;
  const env = { E2FSPROGS_FAKE_TIME: String(epoch) };
  const { stdout } = await exec("dumpe2fs", [at], { env });
  const script = usedInodes(stdout)
    .flatMap((i) => [`sif <${i}> atime @${epoch}`, `sif <${i}> ctime @${epoch}`])
    .join("\n");
  await exec("debugfs", ["-w", "-f", "-", at], { env, input: `${script}\n` });
}

/** The inodes dumpe2fs's group listing does not call free (the root and every file; not the reserved 1, 3–10). */
export function usedInodes(dump: string): number[] {
  const perGroup = Number(/^Inodes per group:\s+(\d+)/m.exec(dump)?.[1]);
  if (!perGroup) throw new Error("dumpe2fs printed no inodes per group");
  const used: number[] = [];
  const groups = dump.split(/^Group (\d+):/m);
  for (let k = 1; k + 1 < groups.length; k += 2) {
    const g = Number(groups[k]);
    const free = /^\s+Free inodes:(.*)$/m.exec(groups[k + 1]!)?.[1] ?? "";
    const isFree = new Set<number>();
    for (const r of free
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean)) {
      const [a, b] = r.split("-").map(Number);
      for (let i = a!; i <= (b ?? a!); i++) isFree.add(i);
    }
    for (let i = g * perGroup + 1; i <= (g + 1) * perGroup; i++)
      if (!isFree.has(i) && (i === 2 || i >= 11)) used.push(i);
  }
  return used;
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
    // Fixed times in the boot sector and the label's entry (the volume id is ours: -i).
    "--invariant",
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

/**
 * Copy files onto a FAT filesystem inside an image with mtools: staged as a
 * tree and copied in one `mcopy -s -m`, so every entry (directories too)
 * carries the staged time — `epoch` when given — instead of the clock's.
 */
export async function fatPut(
  image: string,
  offset: number,
  files: { from: string; to: string }[],
  epoch?: number,
): Promise<void> {
  const stage = await mkdtemp(join(dirname(image), ".esp-"));
  try {
    for (const f of files) {
      const to = join(stage, f.to);
      await mkdir(dirname(to), { recursive: true });
      await copyFile(f.from, to);
    }
    if (epoch !== undefined) await clampTimes(stage, epoch);
    const tops = (await readdir(stage)).sort().map((n) => join(stage, n));
    await exec("mcopy", ["-s", "-m", "-o", "-i", `${image}@@${offset}`, ...tops, "::/"], {
      env: { MTOOLS_SKIP_CHECK: "1" },
    });
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}
