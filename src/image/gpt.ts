/**
 * GPT layout arithmetic, kept free of I/O so it can be tested exhaustively.
 * Everything is in 512-byte sectors and aligned to 1 MiB, as partitioning
 * tools and SSDs expect.
 */
export const SECTOR = 512;
export const MIB = 1024 * 1024;
const ALIGN = MIB / SECTOR; // 2048 sectors
/** Primary GPT needs 34 sectors; the backup at the end needs 33. */
const BACKUP_GPT_SECTORS = 33;

export const PART_TYPES = {
  bios: "21686148-6449-6E6F-744E-656564454649",
  esp: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
  rootX86_64: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
  rootArm64: "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
  linuxData: "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
  linuxRaid: "A19D880F-05FC-4D3B-A006-743F0F84911E",
} as const;

export interface PartitionRequest {
  name: string;
  type: string;
  uuid: string;
  /** Bytes; rounded up to whole MiB. For the grow partition, the minimum. */
  size: number;
  /** This partition takes whatever the disk size leaves over. */
  grow?: boolean;
}

export interface Partition extends PartitionRequest {
  index: number;
  start: number; // sector
  sectors: number;
  offset: number; // bytes
  bytes: number;
}

export interface Layout {
  diskBytes: number;
  partitions: Partition[];
}

export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/**
 * Place partitions one after another. With `diskBytes`, the `grow` partition
 * is stretched to fill the disk; without it the disk is just big enough.
 */
export function layoutDisk(parts: PartitionRequest[], diskBytes?: number): Layout {
  if (parts.filter((p) => p.grow).length > 1) throw new Error("only one partition can grow");
  const sectorsOf = (bytes: number) => alignUp(Math.ceil(bytes / SECTOR), ALIGN);
  const minimal = parts.reduce((sum, p) => sum + sectorsOf(p.size), ALIGN) + ALIGN;
  let total = minimal;
  if (diskBytes !== undefined) {
    const want = Math.floor(diskBytes / SECTOR);
    if (want < minimal) {
      throw new RangeError(
        `disk size ${fmtMiB(want * SECTOR)} is too small: the partitions need at least ${fmtMiB(minimal * SECTOR)}`,
      );
    }
    total = alignUp(want, ALIGN);
  }
  const spare = total - minimal;
  let next = ALIGN;
  const out: Partition[] = parts.map((p, i) => {
    let sectors = sectorsOf(p.size);
    if (p.grow) sectors += spare;
    const start = next;
    next += sectors;
    return { ...p, index: i + 1, start, sectors, offset: start * SECTOR, bytes: sectors * SECTOR };
  });
  // The last partition must end before the backup GPT.
  const last = out[out.length - 1];
  if (last && last.start + last.sectors > total - BACKUP_GPT_SECTORS) last.sectors -= ALIGN;
  if (last) last.bytes = last.sectors * SECTOR;
  return { diskBytes: total * SECTOR, partitions: out };
}

/** The layout as an sfdisk script (`sfdisk IMAGE < script`). */
export function sfdiskScript(layout: Layout, diskUuid: string): string {
  const lines = ["label: gpt", `label-id: ${diskUuid}`, "unit: sectors", "first-lba: 2048", ""];
  for (const p of layout.partitions) {
    lines.push(
      `start=${p.start}, size=${p.sectors}, type=${p.type}, uuid=${p.uuid}, name="${p.name}"`,
    );
  }
  return `${lines.join("\n")}\n`;
}

export function fmtMiB(bytes: number): string {
  return `${(bytes / MIB).toFixed(0)} MiB`;
}
