import { existsSync } from "node:fs";
import { join } from "node:path";
import { KilnError } from "../util/errors.js";
import { foreignDeb } from "../util/foreign-deb.js";

/** GRUB's platform directory for a Debian architecture's UEFI, its package, and the removable-media file name. */
export const GRUB_EFI: Record<string, { platform: string; pkg: string; removable: string }> = {
  amd64: { platform: "x86_64-efi", pkg: "grub-efi-amd64-bin", removable: "BOOTX64.EFI" },
  arm64: { platform: "arm64-efi", pkg: "grub-efi-arm64-bin", removable: "BOOTAA64.EFI" },
};

const HOST_GRUB = "/usr/lib/grub";

/**
 * The directory of GRUB modules for `arch`'s UEFI: the host's own when it
 * has them (amd64 on an amd64 host), otherwise Debian's package for that
 * architecture, unpacked into kiln's cache. grub-mkimage is
 * architecture-neutral: the host's assembles an arm64 image from arm64 modules.
 */
export async function grubModules(arch: string): Promise<string> {
  const g = GRUB_EFI[arch];
  if (!g) throw new KilnError("GRUB_MODULES", `kiln knows no GRUB UEFI platform for ${arch}`);
  const host = join(HOST_GRUB, g.platform);
  if (existsSync(join(host, "kernel.img"))) return host;
  const rel = `usr/lib/grub/${g.platform}`;
  return join(await foreignDeb(g.pkg, arch, `${rel}/kernel.img`), rel);
}
