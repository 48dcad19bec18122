import { copyFile, mkdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { GRUB_MODULES_ISO } from "../../image/grubcfg.js";
import { partitionNumber, partitions, rootPartition } from "../../image/partitions.js";
import { exec } from "../../util/exec.js";
import { shellQuote } from "../../util/shell.js";
import type { BuildContext } from "../context.js";
import { kernelCmdline } from "./disk.js";
import { makeInitrd } from "./netboot.js";

/** What the ISO initrd loads (with dependencies) to find its medium and mount the live system. */
export const ISO_MODULES = [
  "virtio_pci",
  "virtio_blk",
  "virtio_scsi",
  "ahci",
  "sd_mod",
  "sr_mod",
  "cdrom",
  "isofs",
  "xhci_pci",
  "ehci_pci",
  "usb_storage",
  "uas",
  "loop",
  "squashfs",
  "overlay",
  "ext4",
];

export function isoGrubConfig(name: string, version: string, cmdline: string): string {
  const entry = (title: string, extra: string) =>
    [
      `menuentry "${title}" {`,
      `  linux /boot/vmlinuz ${[extra, cmdline].filter(Boolean).join(" ")}`,
      "  initrd /boot/initrd.img",
      "}",
    ].join("\n");
  return [
    "serial --unit=0 --speed=115200",
    "terminal_input serial console",
    "terminal_output serial console",
    "set timeout=3",
    "set default=0",
    entry(`Install ${name} ${version} (unattended; only onto an empty disk)`, "kiln.install"),
    entry(`${name} ${version} live (installs nothing)`, ""),
    "",
  ].join("\n");
}

/**
 * A hybrid installer ISO (El Torito for BIOS, an ESP image for UEFI, an MBR
 * for USB sticks; made by grub-mkrescue with xorriso). The build's own disk
 * is in it once: the root filesystem as root.ext4 and the rest of the disk
 * (partition table, ESP, BIOS boot) with the root's range left as zeros,
 * both in one zstd squashfs. The live system runs root.ext4 read-only
 * under a tmpfs overlay; the installer writes both parts to the target.
 */
export async function isoStep(ctx: BuildContext): Promise<string> {
  const { spec } = ctx;
  const raw = join(ctx.stage, `${spec.name}.raw`);
  const tree = join(ctx.work, "iso");
  const live = join(ctx.work, "iso-live");
  await mkdir(join(tree, "boot/grub"), { recursive: true });
  await mkdir(join(tree, "live"), { recursive: true });
  await mkdir(live, { recursive: true });

  const parts = (await partitions(raw)).sort((a, b) => a.start - b.start);
  const root = await rootPartition(raw);
  const last = parts[parts.length - 1]!;
  ctx.detail("root filesystem and disk skeleton");
  await exec("dd", [
    `if=${raw}`,
    `of=${join(live, "root.ext4")}`,
    "bs=1M",
    `skip=${root.offset}`,
    `count=${root.size * 512}`,
    "iflag=skip_bytes,count_bytes",
    "conv=sparse",
    "status=none",
  ]);
  await exec("cp", ["--sparse=always", raw, join(live, "disk.img")]);
  await exec("fallocate", [
    "--punch-hole",
    "--offset",
    String(root.offset),
    "--length",
    String(root.size * 512),
    join(live, "disk.img"),
  ]);
  const env = {
    NAME: spec.name,
    VERSION: spec.version,
    IMAGE_BYTES: (await stat(raw)).size,
    ROOT_OFFSET: root.offset,
    LAST_PART: partitionNumber(last),
    PARTITIONS: parts.map((p) => `${partitionNumber(p)}:${p.type}:${p.size * 512}`).join(" "),
  };
  await writeFile(
    join(live, "install.env"),
    Object.entries(env)
      .map(([k, v]) => `${k}=${shellQuote(String(v))}\n`)
      .join(""),
  );
  ctx.detail("squashfs");
  await exec("mksquashfs", [
    live,
    join(tree, "live/live.squashfs"),
    "-comp",
    "zstd",
    "-noappend",
    "-quiet",
  ]);
  await rm(live, { recursive: true, force: true });

  const version = ctx.facts.kernelVersion!;
  await copyFile(join(ctx.root, "boot", `vmlinuz-${version}`), join(tree, "boot/vmlinuz"));
  await makeInitrd(ctx, version, join(tree, "boot/initrd.img"), {
    name: "iso-initrd",
    modules: ISO_MODULES,
    files: [
      { asset: "iso/init", to: "init" },
      { asset: "iso/kiln-install", to: "kiln-install/kiln-install" },
      { asset: "iso/kiln-install.service", to: "kiln-install/kiln-install.service" },
    ],
  });
  await writeFile(
    join(tree, "boot/grub/grub.cfg"),
    isoGrubConfig(spec.name, spec.version, kernelCmdline(spec)),
  );
  ctx.detail("grub-mkrescue");
  const out = join(ctx.stage, `${spec.name}.iso`);
  // Only the modules the ISO's grub.cfg needs (grub-mkrescue adds what they
  // depend on), and no fonts, locales or themes: its menu is text on serial
  // and screen. GRUB's share of the ISO 19.3 → 4.7 MiB.
  await exec("grub-mkrescue", [
    `--install-modules=${GRUB_MODULES_ISO.join(" ")}`,
    "--fonts=",
    "--locales=",
    "--themes=",
    "-o",
    out,
    tree,
  ]);
  return out;
}
