import { open } from "node:fs/promises";

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const DT_NEEDED = 1;
const DT_STRTAB = 5;

/**
 * The DT_NEEDED names of an ELF file (the libraries the dynamic loader will
 * look for), read from its dynamic section; undefined for a file that is not
 * ELF or has no dynamic section. Read from outside, so it works for any
 * architecture without running the image's loader.
 */
export async function neededLibraries(path: string): Promise<string[] | undefined> {
  const fh = await open(path, "r");
  try {
    const read = async (offset: number, length: number) => {
      const b = Buffer.alloc(length);
      const { bytesRead } = await fh.read(b, 0, length, offset);
      return b.subarray(0, bytesRead);
    };
    const head = await read(0, 64);
    if (head.length < 52 || head.readUInt32BE(0) !== 0x7f454c46) return undefined;
    const wide = head[4] === 2;
    const le = head[5] === 1;
    const u16 = (b: Buffer, o: number) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const word = (b: Buffer, o: number) =>
      wide
        ? Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o))
        : le
          ? b.readUInt32LE(o)
          : b.readUInt32BE(o);
    const phoff = word(head, wide ? 0x20 : 0x1c);
    const phentsize = u16(head, wide ? 0x36 : 0x2a);
    const phnum = u16(head, wide ? 0x38 : 0x2c);
    const ph = await read(phoff, phentsize * phnum);
    const loads: { vaddr: number; offset: number; size: number }[] = [];
    let dyn: { offset: number; size: number } | undefined;
    for (let i = 0; i < phnum; i++) {
      const o = i * phentsize;
      if (o + phentsize > ph.length) break;
      const type = le ? ph.readUInt32LE(o) : ph.readUInt32BE(o);
      // Elf64_Phdr: type, flags, offset, vaddr, paddr, filesz; Elf32_Phdr: type, offset, vaddr, paddr, filesz.
      const offset = word(ph, o + (wide ? 8 : 4));
      const vaddr = word(ph, o + (wide ? 16 : 8));
      const filesz = word(ph, o + (wide ? 32 : 16));
      if (type === PT_LOAD) loads.push({ vaddr, offset, size: filesz });
      if (type === PT_DYNAMIC) dyn = { offset, size: filesz };
    }
    if (!dyn) return undefined;
    const d = await read(dyn.offset, dyn.size);
    const entry = wide ? 16 : 8;
    const needed: number[] = [];
    let strtab: number | undefined;
    for (let o = 0; o + entry <= d.length; o += entry) {
      const tag = word(d, o);
      const val = word(d, o + entry / 2);
      if (tag === 0) break;
      if (tag === DT_NEEDED) needed.push(val);
      if (tag === DT_STRTAB) strtab = val;
    }
    if (strtab === undefined) return [];
    const seg = loads.find((l) => strtab! >= l.vaddr && strtab! < l.vaddr + l.size);
    if (!seg) return [];
    const base = strtab - seg.vaddr + seg.offset;
    const names: string[] = [];
    for (const n of needed) {
      const s = await read(base + n, 256);
      const end = s.indexOf(0);
      names.push(s.subarray(0, end < 0 ? s.length : end).toString("latin1"));
    }
    return names;
  } finally {
    await fh.close();
  }
}
