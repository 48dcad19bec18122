import { exec } from "../util/exec.js";

export interface PackageInfo {
  name: string;
  version: string;
  /** Installed size in KiB as dpkg records it. */
  installedKiB: number;
}

/** Read the image's package database from outside (no chroot needed). */
export async function listPackages(root: string): Promise<PackageInfo[]> {
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

/** One installed package's version, read from outside like listPackages. */
export async function packageVersion(root: string, name: string): Promise<string> {
  const { stdout } = await exec("dpkg-query", [
    `--admindir=${root}/var/lib/dpkg`,
    "-W",
    "-f=${Version}",
    name,
  ]);
  return stdout.trim();
}
