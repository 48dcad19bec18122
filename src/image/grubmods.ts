import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { log } from "../util/log.js";
import { cacheDir } from "../util/paths.js";

/** GRUB's platform directory for a Debian architecture's UEFI, and the package that has it. */
export const GRUB_EFI: Record<string, { platform: string; pkg: string; removable: string }> = {
  amd64: { platform: "x86_64-efi", pkg: "grub-efi-amd64-bin", removable: "BOOTX64.EFI" },
  arm64: { platform: "arm64-efi", pkg: "grub-efi-arm64-bin", removable: "BOOTAA64.EFI" },
};

const HOST_GRUB = "/usr/lib/grub";

/** The host's Debian release (GRUB's modules should match its grub-mkimage); bookworm elsewhere. */
function hostRelease(): string {
  try {
    const os = readFileSync("/etc/os-release", "utf8");
    if (/^ID=debian$/m.test(os)) return /^VERSION_CODENAME=(\w+)$/m.exec(os)?.[1] ?? "bookworm";
  } catch {}
  return "bookworm";
}

/**
 * The directory of GRUB modules for `arch`'s UEFI. The host's own when it
 * has them (amd64 on an amd64 host); otherwise Debian's package for that
 * architecture, which an amd64 host cannot install, fetched once with a
 * private apt state (the host's apt lists and dpkg are not touched) and
 * unpacked into kiln's cache. grub-mkimage is architecture-neutral: the
 * host's assembles an arm64 image from arm64 modules.
 */
export async function grubModules(arch: string): Promise<string> {
  const g = GRUB_EFI[arch];
  if (!g) throw new KilnError("GRUB_MODULES", `kiln knows no GRUB UEFI platform for ${arch}`);
  const host = join(HOST_GRUB, g.platform);
  if (existsSync(join(host, "kernel.img"))) return host;
  const release = hostRelease();
  const dir = cacheDir("grub", `${release}-${arch}`);
  const mods = join(dir, "root/usr/lib/grub", g.platform);
  if (existsSync(join(mods, "kernel.img"))) return mods;
  log.info(`fetching Debian's ${g.pkg} (${release}, ${arch}) for GRUB's modules (once)`);
  await mkdir(dir, { recursive: true });
  const tmp = await mkdtemp(join(dir, ".fetch-"));
  try {
    const state = join(tmp, "state");
    await mkdir(join(state, "lists/partial"), { recursive: true });
    await mkdir(join(tmp, "cache/archives/partial"), { recursive: true });
    await writeFile(join(state, "status"), "");
    const mirror = "http://deb.debian.org/debian";
    const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    const suites = [release, `${release}-updates`];
    await writeFile(
      join(tmp, "sources.list"),
      `${suites.map((s) => `deb [arch=${arch} signed-by=${keyring}] ${mirror} ${s} main`).join("\n")}\n`,
    );
    const opts = [
      `-oAPT::Architecture=${arch}`,
      `-oAPT::Architectures=${arch}`,
      `-oDir::State=${state}`,
      `-oDir::State::status=${join(state, "status")}`,
      `-oDir::Cache=${join(tmp, "cache")}`,
      `-oDir::Etc::SourceList=${join(tmp, "sources.list")}`,
      "-oDir::Etc::SourceParts=/nonexistent",
      "-oAcquire::Languages=none",
      "-q",
    ];
    const hint = `kiln fetches ${g.pkg} from ${mirror}; check the network, or the keyring ${keyring} (debian-archive-keyring)`;
    await exec("apt-get", [...opts, "update"], { hint });
    await exec("apt-get", [...opts, "download", g.pkg], { cwd: tmp, hint });
    const deb = readdirSync(tmp).find((f) => f.endsWith(".deb"));
    if (!deb) throw new KilnError("GRUB_MODULES", `apt-get download ${g.pkg} gave no package`);
    await exec("dpkg-deb", ["-x", join(tmp, deb), join(tmp, "root")]);
    if (!existsSync(join(tmp, "root/usr/lib/grub", g.platform, "kernel.img")))
      throw new KilnError("GRUB_MODULES", `${deb} has no ${g.platform} modules`);
    await rm(join(dir, "root"), { recursive: true, force: true });
    await rename(join(tmp, "root"), join(dir, "root"));
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return mods;
}
