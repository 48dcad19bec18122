import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { exec } from "../util/exec.js";

/** Where a root without a dpkg database (profile nano) lists its packages: name, version, KiB. */
export const PACKAGE_LIST = "usr/lib/kiln/packages";

export interface PackageInfo {
  name: string;
  version: string;
  /** Installed size in KiB as dpkg records it. */
  installedKiB: number;
}

/** PACKAGE_LIST's text: a line per package, name, version and KiB tab-separated, by name. */
export function formatPackageList(pkgs: readonly PackageInfo[]): string {
  return pkgs
    .map((p) => `${p.name}\t${p.version}\t${p.installedKiB}\n`)
    .sort()
    .join("");
}

/** Read the image's package database from outside (no chroot needed). */
export async function listPackages(root: string): Promise<PackageInfo[]> {
  if (!existsSync(join(root, "var/lib/dpkg/status")) && existsSync(join(root, PACKAGE_LIST))) {
    return (await readFile(join(root, PACKAGE_LIST), "utf8"))
      .split("\n")
      .filter(Boolean)
      .map((l) => {
        const [name, version, size] = l.split("\t");
        return { name: name!, version: version ?? "", installedKiB: Number(size) || 0 };
      })
      .sort((a, b) => a.name.localeCompare(b.name));
  }
  const { stdout } = await exec("dpkg-query", [
    `--admindir=${root}/var/lib/dpkg`,
    "-W",
    "-f",
    "${binary:Package}\\t${Version}\\t${Installed-Size}\\t${db:Status-Abbrev}\\n",
  ]);
  return stdout
    .split("\n")
    .filter((l) => l.includes("\tii"))
    .map((l) => {
      const [name, version, size] = l.split("\t");
      return { name: name!, version: version!, installedKiB: Number(size) || 0 };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}
