import { existsSync, readdirSync } from "node:fs";
import { mkdir, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KilnError } from "../../util/errors.js";
import { inRoot } from "../chroot.js";
import type { BuildContext } from "../context.js";

/**
 * Kernel version, initrd and the stable /vmlinuz and /initrd.img links GRUB
 * boots through (so an updated slot may carry another kernel version).
 */
export async function kernelStep(ctx: BuildContext): Promise<void> {
  const { root, spec } = ctx;
  const versions = readdirSync(join(root, "boot"))
    .filter((f) => f.startsWith("vmlinuz-"))
    .map((f) => f.slice("vmlinuz-".length))
    .sort();
  const version = versions[versions.length - 1];
  if (!version) {
    throw new KilnError("BUILD_NO_KERNEL", "the image has no kernel in /boot", {
      hint: "set kernel.package to a linux-image package of the distribution",
    });
  }
  ctx.facts.kernelVersion = version;

  if (spec.kernel.initrd === "tiny") {
    const conf = join(root, "etc/tiny-initramfs");
    await mkdir(conf, { recursive: true });
    // Automatic detection reads the build host's mounts, which say nothing about the target machine.
    await writeFile(
      join(conf, "tiny-initramfs.conf"),
      `# Written by kiln from kernel.modules\nAUTO_MODULES=no\nINCLUDE_MODULES="${spec.kernel.modules.join(",")}"\nMICROCODE=no\n`,
    );
    await inRoot(root, "mktirfs", ["-o", `/boot/initrd.img-${version}`, version]);
  } else if (!existsSync(join(root, `boot/initrd.img-${version}`))) {
    await inRoot(root, "update-initramfs", ["-c", "-k", version]);
  }
  for (const [link, target] of [
    ["vmlinuz", `boot/vmlinuz-${version}`],
    ["initrd.img", `boot/initrd.img-${version}`],
  ] as const) {
    await rm(join(root, link), { force: true });
    await symlink(target, join(root, link));
  }
}
