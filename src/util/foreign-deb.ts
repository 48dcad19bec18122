import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KilnError } from "./errors.js";
import { exec } from "./exec.js";
import { log } from "./log.js";
import { cacheDir } from "./paths.js";

/** The host's Debian release (its tools should match what they are handed); bookworm elsewhere. */
function hostRelease(): string {
  try {
    const os = readFileSync("/etc/os-release", "utf8");
    if (/^ID=debian$/m.test(os)) return /^VERSION_CODENAME=(\w+)$/m.exec(os)?.[1] ?? "bookworm";
  } catch {}
  return "bookworm";
}

/**
 * Debian's package `pkg` for another architecture than the host's, unpacked
 * (never installed) into kiln's cache once; returns the unpacked tree. The
 * host cannot install it (GRUB's arm64 modules, an arm64 static busybox), so
 * apt runs with a state of its own: the host's apt lists, sources and dpkg
 * are not touched, and nothing is registered as a foreign architecture.
 */
export async function foreignDeb(pkg: string, arch: string, marker: string): Promise<string> {
  const release = hostRelease();
  const dir = cacheDir("debs", `${pkg}_${release}_${arch}`);
  const root = join(dir, "root");
  if (existsSync(join(root, marker))) return root;
  log.info(`fetching Debian's ${pkg} (${release}, ${arch}) once`);
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
    const hint = `kiln fetches ${pkg} for ${arch} from ${mirror}; check the network, or the keyring ${keyring} (debian-archive-keyring)`;
    await exec("apt-get", [...opts, "update"], { hint });
    await exec("apt-get", [...opts, "download", pkg], { cwd: tmp, hint });
    const deb = readdirSync(tmp).find((f) => f.endsWith(".deb"));
    if (!deb) throw new KilnError("FOREIGN_DEB", `apt-get download ${pkg} gave no package`);
    await exec("dpkg-deb", ["-x", join(tmp, deb), join(tmp, "root")]);
    if (!existsSync(join(tmp, "root", marker)))
      throw new KilnError("FOREIGN_DEB", `${deb} has no ${marker}`);
    await rm(root, { recursive: true, force: true });
    await rename(join(tmp, "root"), root);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return root;
}
