import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { PART_TYPES } from "./gpt.js";

export interface SfdiskPartition {
  /** The device node sfdisk would name, e.g. disk.raw3: the number is the partition's. */
  node: string;
  start: number;
  /** In sectors. */
  size: number;
  type: string;
  name?: string;
}

/** Partitions of a raw image, with byte offsets. */
export async function partitions(image: string): Promise<(SfdiskPartition & { offset: number })[]> {
  const { stdout } = await exec("sfdisk", ["--json", image]);
  const t = (
    JSON.parse(stdout) as { partitiontable: { partitions: SfdiskPartition[]; sectorsize?: number } }
  ).partitiontable;
  return t.partitions.map((p) => ({ ...p, offset: p.start * (t.sectorsize ?? 512) }));
}

/** A partition's number (as in /dev/vdaN), from the node name sfdisk gives it. */
export function partitionNumber(p: { node: string }): number {
  return Number(/(\d+)$/.exec(p.node)?.[1] ?? 0);
}

/**
 * One partition of an image file on a loop device limited to its extent:
 * no partition nodes are needed, which hosts without udev lack.
 */
export async function loopPartition(
  image: string,
  p: { offset: number; size: number },
  o: { readOnly?: boolean } = {},
): Promise<string> {
  const args = ["--find", "--show", ...(o.readOnly ? ["--read-only"] : [])];
  args.push("--offset", String(p.offset), "--sizelimit", String(p.size * 512), image);
  return (await exec("losetup", args)).stdout.trim();
}

/** The partition a disk boots by default: root-a, else the first Linux root (or Linux filesystem) one. */
export async function rootPartition(image: string) {
  const parts = await partitions(image);
  const p =
    parts.find((x) => x.name === "root-a") ??
    parts.find((x) => x.type === PART_TYPES.rootX86_64 || x.type === PART_TYPES.rootArm64) ??
    // A mirrored root's member (md metadata 1.0) starts with its filesystem.
    parts.find((x) => x.type === PART_TYPES.linuxRaid) ??
    parts.find((x) => x.type === PART_TYPES.linuxData);
  if (!p) throw new KilnError("DISK_NO_ROOT", `${image} has no Linux root partition`);
  return p;
}

/** Byte offset of the partition a disk boots by default. */
export async function rootPartitionOffset(image: string): Promise<number> {
  return (await rootPartition(image)).offset;
}

/** The architecture a raw disk's root partition type names (the Discoverable Partitions types), if any. */
export async function diskArch(image: string): Promise<"amd64" | "arm64" | undefined> {
  const parts = await partitions(image).catch(() => []);
  if (parts.some((p) => p.type === PART_TYPES.rootArm64)) return "arm64";
  if (parts.some((p) => p.type === PART_TYPES.rootX86_64)) return "amd64";
  return undefined;
}
