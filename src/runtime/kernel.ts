import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { PART_TYPES } from "../image/gpt.js";
import { partitions } from "../image/partitions.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";

/**
 * The kernel, initrd and command line GRUB would boot, read out of a kiln
 * disk without mounting it: grub.cfg and grubenv from the ESP (mtools), the
 * files from the slot's ext4 root (debugfs). Lets `kiln vm --direct-kernel`
 * skip firmware and GRUB, which costs seconds under TCG.
 */
export async function extractBoot(
  image: string,
  dir: string,
): Promise<{ kernel: string; initrd: string; cmdline: string }> {
  let raw = image;
  if (image.endsWith(".qcow2")) {
    raw = join(dir, "boot.raw");
    await exec("qemu-img", ["convert", "-O", "raw", image, raw]);
  }
  const parts = await partitions(raw);
  const esp = parts.find((p) => p.type === PART_TYPES.esp);
  if (!esp)
    throw new KilnError("VM_NO_ESP", `${image} has no EFI system partition to read grub.cfg from`);
  const env = { MTOOLS_SKIP_CHECK: "1" };
  const cfg = (await exec("mtype", ["-i", `${raw}@@${esp.offset}`, "::/grub/grub.cfg"], { env }))
    .stdout;
  const envText = (
    await exec("mtype", ["-i", `${raw}@@${esp.offset}`, "::/grub/grubenv"], {
      env,
      okCodes: [0, 1],
    })
  ).stdout;
  const slot = /^kiln_slot=(\w+)$/m.exec(envText)?.[1] ?? "a";
  // A slot's commands are in its function (images before it: in its menu entry).
  const body = `\\{[^}]*?linux (\\S+) ([^\\n]*)\\n\\s*initrd (\\S+)`;
  const entry =
    new RegExp(`function kiln_boot_${slot} ${body}`).exec(cfg) ??
    new RegExp(`--id slot-${slot} ${body}`).exec(cfg);
  if (!entry)
    throw new KilnError("VM_NO_ENTRY", `grub.cfg of ${image} has no entry for slot ${slot}`);
  const [, kernelPath, cmdline, initrdPath] = entry as unknown as [string, string, string, string];
  const uuid = /root=UUID=([0-9a-f-]+)/.exec(cmdline)?.[1];
  const rootPart = (
    await Promise.all(
      parts.map(async (p) => ({
        p,
        uuid: (
          await exec("blkid", ["-p", "-O", String(p.offset), "-s", "UUID", "-o", "value", raw], {
            okCodes: [0, 2],
          })
        ).stdout.trim(),
      })),
    )
  ).find((x) => x.uuid === uuid)?.p;
  if (!rootPart) throw new KilnError("VM_NO_ROOT", `no filesystem with UUID ${uuid} in ${image}`);
  const fs = `${raw}?offset=${rootPart.offset}`;
  const kernel = join(dir, "vmlinuz");
  const initrd = join(dir, "initrd.img");
  await exec("debugfs", ["-R", `dump ${await resolveLink(fs, kernelPath)} ${kernel}`, fs]);
  await exec("debugfs", ["-R", `dump ${await resolveLink(fs, initrdPath)} ${initrd}`, fs]);
  return { kernel, initrd, cmdline };
}

/** debugfs dumps a symlink as the link itself; follow /vmlinuz → boot/vmlinuz-VERSION. */
async function resolveLink(fs: string, path: string): Promise<string> {
  const { stdout } = await exec("debugfs", ["-R", `stat ${path}`, fs]);
  const m = /Fast link dest: "([^"]+)"/.exec(stdout);
  if (!m) return path;
  return m[1]!.startsWith("/") ? m[1]! : `/${m[1]}`;
}

/**
 * The kernel, initrd and command line of an installer ISO's live entry (the
 * one that installs nothing), read out with xorriso, so `kiln test --on iso`
 * boots the live system without GRUB's menu and with the checks appended to
 * its initrd. The ISO itself is still the medium the live system runs from.
 */
export async function extractIsoBoot(
  iso: string,
  dir: string,
): Promise<{ kernel: string; initrd: string; cmdline: string }> {
  const kernel = join(dir, "vmlinuz");
  const initrd = join(dir, "initrd.img");
  const cfg = join(dir, "grub.cfg");
  await exec("xorriso", [
    ...["-osirrox", "on", "-indev", iso],
    ...["-extract", "/boot/grub/grub.cfg", cfg],
    ...["-extract", "/boot/vmlinuz", kernel],
    ...["-extract", "/boot/initrd.img", initrd],
  ]);
  const entry = /menuentry "[^"]* live [^"]*" \{\s*linux \/boot\/vmlinuz ?([^\n]*)\n/.exec(
    await readFile(cfg, "utf8"),
  );
  if (!entry) throw new KilnError("VM_NO_ENTRY", `${iso} has no live entry in its grub.cfg`);
  return { kernel, initrd, cmdline: entry[1]!.trim() };
}
