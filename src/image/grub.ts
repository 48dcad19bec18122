import { existsSync } from "node:fs";
import { copyFile, mkdtemp, open, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exec } from "../util/exec.js";
import {
  earlyConfig,
  GRUB_MODULES_BIOS,
  GRUB_MODULES_EFI,
  GRUB_MODULES_EFI_ARM64,
} from "./grubcfg.js";
import { GRUB_EFI, grubModules } from "./grubmods.js";

const GRUB_LIB = "/usr/lib/grub";
// grub-pc-bin ships the tool beside its modules; /usr/sbin has it only with grub-pc, which kiln must not need.
const BIOS_SETUP = existsSync(`${GRUB_LIB}/i386-pc/grub-bios-setup`)
  ? `${GRUB_LIB}/i386-pc/grub-bios-setup`
  : "grub-bios-setup";

/** A GRUB core image for `platform` with the early config and every module it needs built in. */
async function mkimage(
  platform: "x86_64-efi" | "arm64-efi" | "i386-pc",
  out: string,
  espVolumeUuid: string,
  serial: boolean,
  scratch: string,
  moduleDir = `${GRUB_LIB}/${platform}`,
): Promise<void> {
  const cfg = join(scratch, "early.cfg");
  await writeFile(cfg, earlyConfig(espVolumeUuid, serial));
  const modules =
    platform === "i386-pc"
      ? GRUB_MODULES_BIOS
      : platform === "arm64-efi"
        ? GRUB_MODULES_EFI_ARM64
        : GRUB_MODULES_EFI;
  await exec("grub-mkimage", [
    "-O",
    platform,
    "-d",
    moduleDir,
    "-o",
    out,
    "-p",
    "/grub",
    "-c",
    cfg,
    ...modules,
  ]);
}

async function withScratch<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "kiln-grub-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A standalone GRUB EFI binary for `arch` (for the removable-media path on the ESP). */
export async function makeEfiImage(
  out: string,
  espVolumeUuid: string,
  serial: boolean,
  arch = "amd64",
): Promise<void> {
  const platform = GRUB_EFI[arch]?.platform as "x86_64-efi" | "arm64-efi";
  const modules = await grubModules(arch);
  return withScratch((dir) => mkimage(platform, out, espVolumeUuid, serial, dir, modules));
}

/**
 * Install GRUB for BIOS into a disk image file: boot.img in the MBR and
 * core.img in the BIOS boot partition. grub-bios-setup refuses plain files
 * and looks up the device behind its module directory in
 * /proc/self/mountinfo, so it runs in a private mount namespace where that
 * file is replaced by one line naming the image (see HOST-FACTS.md).
 *
 * It runs on a sparse twin of the image holding only its first `headBytes`
 * (the partition table through the BIOS boot partition) and its backup GPT,
 * and that head is copied back: grub-bios-setup fsyncs the file it writes,
 * and on the real image that flushes the root filesystem mkfs has just
 * written (1.47 s of a 6.1 s rebuild, against a few ms on the twin).
 */
export function installBiosGrub(
  image: string,
  espVolumeUuid: string,
  serial: boolean,
  headBytes: number,
): Promise<void> {
  return withScratch(async (dir) => {
    await mkimage("i386-pc", join(dir, "core.img"), espVolumeUuid, serial, dir);
    await copyFile(`${GRUB_LIB}/i386-pc/boot.img`, join(dir, "boot.img"));
    const twin = join(dir, "twin.raw");
    const size = (await stat(image)).size;
    const tail = Math.min(BACKUP_GPT_BYTES, size - headBytes);
    await writeFile(twin, "");
    await truncate(twin, size);
    await copyRange(image, twin, 0, headBytes);
    await copyRange(image, twin, size - tail, tail);
    const fake = join(dir, "mountinfo");
    await writeFile(fake, `1 0 1:1 / / - fat ${twin}\n`);
    // `exec` keeps the shell's pid, so the bind over /proc/$$/mountinfo is the one grub-bios-setup reads.
    const script = 'mount --bind "$1" /proc/$$/mountinfo && exec "$4" --skip-fs-probe -d "$2" "$3"';
    await exec(
      "unshare",
      [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        fake,
        dir,
        twin,
        BIOS_SETUP,
      ],
      {
        hint: "grub-bios-setup comes from grub-pc-bin",
      },
    );
    await copyRange(twin, image, 0, headBytes);
  });
}

/** The backup GPT: its 128 entries and header at the end of the disk. */
const BACKUP_GPT_BYTES = 33 * 512;

/** Copy `length` bytes at `offset` from one file to the same place in another. */
async function copyRange(from: string, to: string, offset: number, length: number): Promise<void> {
  const src = await open(from, "r");
  try {
    const dst = await open(to, "r+");
    try {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await src.read(buf, 0, length, offset);
      if (bytesRead !== length) throw new Error(`${from}: short read at ${offset}`);
      await dst.write(buf, 0, length, offset);
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}
