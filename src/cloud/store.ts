import { existsSync, readdirSync, readFileSync } from "node:fs";
import { KilnError } from "../util/errors.js";
import { removeTree } from "../util/fsx.js";
import { storeDir } from "../util/paths.js";

/** An imported disk: what it is, where it came from, how it was verified. */
export interface DiskRecord {
  name: string;
  source: string;
  /** "sha512:HEX" or "sha256:HEX" of what was downloaded; null when no sum was given. */
  verified: string | null;
  /** The format it arrived in (qemu-img's name); stored as raw. */
  format: string;
  virtualSize: number;
  partitions: { number: number; name?: string; type: string; size: number }[];
  /** The partition specs customise (number, as in /dev/vdaN). */
  root: number;
  imported: string;
}

export const NAME_RE = /^[a-z0-9][a-z0-9._-]*$/;

/** Imported disks live beside kiln's container images: STORE/disks/NAME/{disk.raw,disk.json}. */
export function disksDir(...parts: string[]): string {
  return storeDir("disks", ...parts);
}

export function diskPath(name: string): string {
  return disksDir(name, "disk.raw");
}

export function findDisk(name: string): DiskRecord | undefined {
  const f = disksDir(name, "disk.json");
  if (!existsSync(f) || !existsSync(diskPath(name))) return undefined;
  return JSON.parse(readFileSync(f, "utf8")) as DiskRecord;
}

/** The record of `image:NAME`, or an error that says how to get it. */
export function requireDisk(name: string): DiskRecord {
  const r = findDisk(name);
  if (!r)
    throw new KilnError("IMAGE_NOT_IMPORTED", `no imported disk named ${name}`, {
      hint: `import it first: kiln import URL --name ${name} (see \`kiln disks\`)`,
    });
  return r;
}

export function listDisks(): DiskRecord[] {
  const dir = disksDir();
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => !n.startsWith("."))
    .map((n) => findDisk(n))
    .filter((r): r is DiskRecord => !!r)
    .sort((a, b) => a.name.localeCompare(b.name));
}

export async function removeDisk(name: string): Promise<void> {
  if (!existsSync(disksDir(name)))
    throw new KilnError("IMAGE_NOT_IMPORTED", `no imported disk named ${name}`);
  await removeTree(disksDir(name));
}
