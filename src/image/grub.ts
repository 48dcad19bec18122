import { existsSync } from "node:fs";
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exec } from "../util/exec.js";
import { earlyConfig, GRUB_MODULES_BIOS, GRUB_MODULES_EFI } from "./grubcfg.js";

const GRUB_LIB = "/usr/lib/grub";
// grub-pc-bin ships the tool beside its modules; /usr/sbin has it only with grub-pc, which kiln must not need.
const BIOS_SETUP = existsSync(`${GRUB_LIB}/i386-pc/grub-bios-setup`)
  ? `${GRUB_LIB}/i386-pc/grub-bios-setup`
  : "grub-bios-setup";

/** A standalone GRUB EFI binary with every module it needs built in. */
export async function makeEfiImage(
  out: string,
  espVolumeUuid: string,
  serial: boolean,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "kiln-grub-"));
  try {
    const cfg = join(dir, "early.cfg");
    await writeFile(cfg, earlyConfig(espVolumeUuid, serial));
    await exec("grub-mkimage", [
      "-O",
      "x86_64-efi",
      "-d",
      `${GRUB_LIB}/x86_64-efi`,
      "-o",
      out,
      "-p",
      "/grub",
      "-c",
      cfg,
      ...GRUB_MODULES_EFI,
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Install GRUB for BIOS into a disk image file: boot.img in the MBR and
 * core.img in the BIOS boot partition. grub-bios-setup refuses plain files
 * and looks up the device behind its module directory in
 * /proc/self/mountinfo, so it runs in a private mount namespace where that
 * file is replaced by one line naming the image (see HOST-FACTS.md).
 */
export async function installBiosGrub(
  image: string,
  espVolumeUuid: string,
  serial: boolean,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "kiln-grub-"));
  try {
    const cfg = join(dir, "early.cfg");
    await writeFile(cfg, earlyConfig(espVolumeUuid, serial));
    await exec("grub-mkimage", [
      "-O",
      "i386-pc",
      "-d",
      `${GRUB_LIB}/i386-pc`,
      "-o",
      join(dir, "core.img"),
      "-p",
      "/grub",
      "-c",
      cfg,
      ...GRUB_MODULES_BIOS,
    ]);
    await copyFile(`${GRUB_LIB}/i386-pc/boot.img`, join(dir, "boot.img"));
    const fake = join(dir, "mountinfo");
    await writeFile(fake, `1 0 1:1 / / - fat ${image}\n`);
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
        image,
        BIOS_SETUP,
      ],
      {
        hint: "grub-bios-setup comes from grub-pc-bin",
      },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
