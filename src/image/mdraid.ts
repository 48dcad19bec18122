/**
 * Linux md RAID1 with metadata 1.0, written into image files without the
 * kernel's md driver (build hosts may have none) or loop devices. Metadata
 * 1.0 keeps its superblock at the end of each member and the data from the
 * member's first sector, so a member starts with a plain filesystem: kiln
 * writes the ext4 into the partition as it always does and adds the
 * superblock behind it, and GRUB reads the kernel from either member
 * without knowing about md. The format is the kernel's struct
 * mdp_superblock_1 (include/uapi/linux/raid/md_p.h).
 */
import { open } from "node:fs/promises";

const SECTOR = 512;
const MAGIC = 0xa92b4efc;
/** Slots in dev_roles; unused ones say "spare" (0xffff), as mdadm writes them. */
const MAX_DEV = 128;
export const MD_SUPERBLOCK_BYTES = 256 + MAX_DEV * 2;
/** resync_offset when the whole array is in sync. */
const IN_SYNC = 0xffff_ffff_ffff_ffffn;

/**
 * Where a 1.0 superblock goes in a member of `memberBytes`: 8 KiB from the
 * end, rounded down to 4 KiB (the kernel's and mdadm's rule), in bytes. The
 * data (the filesystem) may use everything before it.
 */
export function md10SuperOffset(memberBytes: number): number {
  const sectors = Math.floor(memberBytes / SECTOR);
  return ((sectors - 16) & ~7) * SECTOR;
}

export interface Md10Member {
  /** The array's UUID (16 bytes), which mdadm.conf names. */
  arrayUuid: Buffer;
  /** This member's own UUID (16 bytes). */
  deviceUuid: Buffer;
  /** Array name, at most 32 bytes (mdadm shows it as name=). */
  name: string;
  /** Role and permanent number of this member: 0, 1, … */
  index: number;
  members: number;
  /** Bytes of each member the array uses (the filesystem's size); a multiple of 4 KiB. */
  dataBytes: number;
  /** Bytes of this member (its partition). */
  memberBytes: number;
  /** Seconds since the epoch, for ctime and utime. */
  time: number;
}

/** One member's superblock, checksum included. */
export function md10Superblock(m: Md10Member): Buffer {
  if (m.arrayUuid.length !== 16 || m.deviceUuid.length !== 16)
    throw new Error("md UUIDs are 16 bytes");
  if (Buffer.byteLength(m.name) > 32) throw new Error("an md array name is at most 32 bytes");
  if (m.index < 0 || m.index >= m.members || m.members > MAX_DEV)
    throw new Error(`member ${m.index} of ${m.members} is out of range`);
  const superOffset = md10SuperOffset(m.memberBytes);
  if (m.dataBytes % 4096 || m.dataBytes > superOffset)
    throw new Error(`${m.dataBytes} data bytes do not fit before the superblock at ${superOffset}`);
  const b = Buffer.alloc(MD_SUPERBLOCK_BYTES);
  const dataSectors = BigInt(m.dataBytes / SECTOR);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt32LE(1, 4); // major_version
  // feature_map 0: no bitmap, no bad-block log, no reshape
  m.arrayUuid.copy(b, 16);
  b.write(m.name, 32, "utf8");
  b.writeBigUInt64LE(BigInt(m.time), 64); // ctime: seconds in the low 40 bits
  b.writeUInt32LE(1, 72); // level: raid1
  b.writeBigUInt64LE(dataSectors, 80); // size: sectors each member gives the array
  b.writeUInt32LE(m.members, 92); // raid_disks
  b.writeBigUInt64LE(0n, 128); // data_offset: the filesystem starts the member
  b.writeBigUInt64LE(dataSectors, 136); // data_size
  b.writeBigUInt64LE(BigInt(superOffset / SECTOR), 144); // super_offset
  b.writeUInt32LE(m.index, 160); // dev_number
  m.deviceUuid.copy(b, 168);
  b.writeBigUInt64LE(BigInt(m.time), 192); // utime
  b.writeBigUInt64LE(1n, 200); // events: every member equally current
  b.writeBigUInt64LE(IN_SYNC, 208); // resync_offset: the members hold the same bytes
  b.writeUInt32LE(MAX_DEV, 220);
  for (let i = 0; i < MAX_DEV; i++) b.writeUInt16LE(i < m.members ? i : 0xffff, 256 + i * 2);
  b.writeUInt32LE(md1Checksum(b), 216);
  return b;
}

/** The kernel's calc_sb_1_csum: 32-bit little-endian words summed, the carry folded in once. */
export function md1Checksum(sb: Buffer): number {
  const maxDev = sb.readUInt32LE(220);
  const size = 256 + maxDev * 2;
  let sum = 0n;
  for (let i = 0; i + 4 <= size; i += 4) sum += BigInt(i === 216 ? 0 : sb.readUInt32LE(i));
  if (size % 4 === 2) sum += BigInt(sb.readUInt16LE(size - 2));
  return Number(((sum & 0xffff_ffffn) + (sum >> 32n)) & 0xffff_ffffn);
}

/** What a member's superblock says, for kiln's own use (mirroring test copies). */
export function parseMd10(sb: Buffer): {
  arrayUuid: string;
  name: string;
  index: number;
  members: number;
  dataBytes: number;
} {
  if (sb.readUInt32LE(0) !== MAGIC) throw new Error("not an md superblock");
  if (sb.readUInt32LE(220) > 2048 || md1Checksum(sb) !== sb.readUInt32LE(216))
    throw new Error("md superblock checksum mismatch");
  return {
    arrayUuid: mdUuidText(sb.subarray(16, 32)),
    name: sb.subarray(32, 64).toString("utf8").replace(/\0+$/, ""),
    index: sb.readUInt32LE(160),
    members: sb.readUInt32LE(92),
    dataBytes: Number(sb.readBigUInt64LE(136)) * SECTOR,
  };
}

/** A 1.x array UUID as mdadm prints it (and mdadm.conf's UUID= takes it): four groups of 8 hex digits. */
export function mdUuidText(uuid: Buffer): string {
  return (uuid.toString("hex").match(/.{8}/g) ?? []).join(":");
}

/** Write each member's superblock at its place inside its image (the partition at `offset`). */
export async function writeMd10Members(
  members: { image: string; offset: number; superblock: Buffer; memberBytes: number }[],
): Promise<void> {
  for (const m of members) {
    const fh = await open(m.image, "r+");
    try {
      await fh.write(
        m.superblock,
        0,
        m.superblock.length,
        m.offset + md10SuperOffset(m.memberBytes),
      );
    } finally {
      await fh.close();
    }
  }
}

/** Read the superblock of the member at `offset` (`memberBytes` long) in an image. */
export async function readMd10(image: string, offset: number, memberBytes: number) {
  const fh = await open(image, "r");
  try {
    const b = Buffer.alloc(MD_SUPERBLOCK_BYTES);
    await fh.read(b, 0, b.length, offset + md10SuperOffset(memberBytes));
    return parseMd10(b);
  } finally {
    await fh.close();
  }
}
