import { open } from "node:fs/promises";

/**
 * mcopy -m keeps a file's modification time, but stamps its creation time
 * and access date with the clock. Set both from the modification time on
 * every entry of a FAT32 filesystem at `offset` in `image`, so an ESP's
 * bytes depend on what was copied, not on when.
 */
export async function pinFatTimes(image: string, offset: number): Promise<number> {
  const fh = await open(image, "r+");
  try {
    const read = async (pos: number, n: number) => {
      const b = Buffer.alloc(n);
      await fh.read(b, 0, n, offset + pos);
      return b;
    };
    const boot = await read(0, 512);
    const bytesPerSector = boot.readUInt16LE(11);
    const perCluster = boot.readUInt8(13);
    const reserved = boot.readUInt16LE(14);
    const fats = boot.readUInt8(16);
    const fatSectors = boot.readUInt32LE(36);
    const rootCluster = boot.readUInt32LE(44);
    if (boot.readUInt16LE(22) !== 0 || !fatSectors || bytesPerSector < 512)
      throw new Error(`${image}@${offset}: not a FAT32 filesystem`);
    const clusterBytes = bytesPerSector * perCluster;
    const fat = await read(reserved * bytesPerSector, fatSectors * bytesPerSector);
    const dataStart = (reserved + fats * fatSectors) * bytesPerSector;
    const clusterAt = (c: number) => dataStart + (c - 2) * clusterBytes;
    const chain = (first: number): number[] => {
      const out: number[] = [];
      for (let c = first; c >= 2 && c < 0x0ffffff8 && out.length < 1 << 20; ) {
        out.push(c);
        c = fat.readUInt32LE(c * 4) & 0x0fffffff;
      }
      return out;
    };
    let pinned = 0;
    const seen = new Set<number>();
    const walk = async (first: number): Promise<void> => {
      if (seen.has(first)) return;
      seen.add(first);
      for (const c of chain(first)) {
        const buf = await read(clusterAt(c), clusterBytes);
        const subdirs: number[] = [];
        let changed = false;
        for (let e = 0; e < clusterBytes; e += 32) {
          const first = buf[e]!;
          if (first === 0) break;
          const attr = buf[e + 11]!;
          if (first === 0xe5 || attr === 0x0f) continue;
          // creation tenths, time and date; access date: from the write time and date
          buf[e + 13] = 0;
          buf.writeUInt16LE(buf.readUInt16LE(e + 22), e + 14);
          buf.writeUInt16LE(buf.readUInt16LE(e + 24), e + 16);
          buf.writeUInt16LE(buf.readUInt16LE(e + 24), e + 18);
          changed = true;
          pinned++;
          const name = buf.toString("latin1", e, e + 11);
          if (attr & 0x10 && name !== ".          " && name !== "..         ")
            subdirs.push((buf.readUInt16LE(e + 20) << 16) | buf.readUInt16LE(e + 26));
        }
        if (changed) await fh.write(buf, 0, clusterBytes, offset + clusterAt(c));
        for (const d of subdirs) await walk(d);
      }
    };
    await walk(rootCluster);
    return pinned;
  } finally {
    await fh.close();
  }
}
