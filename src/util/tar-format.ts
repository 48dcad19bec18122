import { open } from "node:fs/promises";
import { type ErrorCode, KilnError } from "./errors.js";

/**
 * Just enough tar, in both directions: a writer for the headers kiln's own
 * OCI layers need (a directory and regular files, every field fixed, so the
 * same input gives the same bytes), and a reader that lists an archive
 * without unpacking anything: a hostile layer from a registry is judged
 * whole before a byte of it reaches the disk store, and the build looks up
 * which kernel modules a cached root holds before unpacking only those it keeps.
 */

export const BLOCK = 512;
/** Two zero blocks end an archive. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

export interface TarHeader {
  name: string;
  type: "file" | "dir";
  mode: number;
  uid: number;
  gid: number;
  size: number;
}

/** Zero padding after `size` bytes of content, up to the next block. */
export function padding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

function octal(buf: Buffer, at: number, width: number, value: number): void {
  buf.write(`${value.toString(8).padStart(width - 1, "0")}\0`, at, width, "ascii");
}

/**
 * One ustar header, mtime 0 and no user or group names (numeric owners only).
 * Sizes past ustar's 8 GiB go in base-256 (the GNU extension Go's
 * archive/tar, and so every container runtime, reads).
 */
export function tarHeader(h: TarHeader): Buffer {
  const name = h.type === "dir" && !h.name.endsWith("/") ? `${h.name}/` : h.name;
  if (Buffer.byteLength(name) > 100)
    throw new KilnError("INTERNAL", `tar name over 100 bytes: ${name}`);
  const b = Buffer.alloc(BLOCK);
  b.write(name, 0, 100, "utf8");
  octal(b, 100, 8, h.mode);
  octal(b, 108, 8, h.uid);
  octal(b, 116, 8, h.gid);
  if (h.size < 8 ** 11) octal(b, 124, 12, h.size);
  else {
    b[124] = 0x80;
    let v = BigInt(h.size);
    for (let i = 135; i > 124; i--) {
      b[i] = Number(v & 0xffn);
      v >>= 8n;
    }
  }
  octal(b, 136, 12, 0);
  b.write(h.type === "dir" ? "5" : "0", 156, 1, "ascii");
  b.write("ustar\0", 257, 6, "ascii");
  b.write("00", 263, 2, "ascii");
  b.fill(0x20, 148, 156); // the checksum is summed with its own field as spaces
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "ascii");
  return b;
}

/** One member of an archive as the reader found it; `offset` is where its content starts. */
export interface TarMember {
  name: string;
  /** The ustar type flag: "0" file, "5" directory, "1" hard link, "2" symlink, … */
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  offset: number;
  linkname: string;
}

const cstr = (b: Buffer, at: number, width: number) => {
  const s = b.subarray(at, at + width);
  const nul = s.indexOf(0);
  return (nul < 0 ? s : s.subarray(0, nul)).toString("utf8");
};

function number(b: Buffer, at: number, width: number): number {
  if (b[at]! & 0x80) {
    let v = 0n;
    for (let i = at + 1; i < at + width; i++) v = (v << 8n) | BigInt(b[i]!);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad("a size beyond any disk");
    return Number(v);
  }
  const text = cstr(b, at, width).trim();
  if (!/^[0-7]*$/.test(text)) throw bad(`a number field reads "${text}"`);
  return text ? Number.parseInt(text, 8) : 0;
}

/** What is wrong with an archive; listTar says whose archive it is (see its `code`). */
class Malformed extends Error {}
const bad = (why: string) => new Malformed(why);

/** A pax extended header's records ("LEN key=value\n"…); only path, linkpath and size matter here. */
function paxRecords(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let at = 0;
  while (at < body.length) {
    const space = body.indexOf(0x20, at);
    const len = space > at ? Number(body.subarray(at, space).toString("ascii")) : Number.NaN;
    if (!Number.isSafeInteger(len) || len <= space - at || at + len > body.length)
      throw bad("a pax header record is malformed");
    const rec = body.subarray(space + 1, at + len - 1).toString("utf8"); // without the newline
    const eq = rec.indexOf("=");
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    at += len;
  }
  return out;
}

/**
 * Every member of the tar file at `path`, read header by header (content is
 * skipped, never read). Checks each header's checksum and that every
 * member's content lies inside the file; pax and GNU long-name headers are
 * folded into the member they describe.
 */
export async function listTar(
  path: string,
  o: { maxMembers?: number; code?: ErrorCode; what?: string } = {},
): Promise<TarMember[]> {
  try {
    return await readMembers(path, o.maxMembers ?? 100_000);
  } catch (err) {
    if (!(err instanceof Malformed)) throw err;
    throw new KilnError(
      o.code ?? "OCI_LAYER_BAD",
      `${o.what ?? "the layer"} is not a tar archive kiln can read: ${err.message}`,
    );
  }
}

async function readMembers(path: string, max: number): Promise<TarMember[]> {
  const fh = await open(path, "r");
  try {
    const total = (await fh.stat()).size;
    const members: TarMember[] = [];
    const head = Buffer.alloc(BLOCK);
    let at = 0;
    let pending: Record<string, string> = {};
    let longName: string | undefined;
    let longLink: string | undefined;
    const readAt = async (buf: Buffer, pos: number) => {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead < buf.length) throw bad(`it ends inside a member (at byte ${pos})`);
    };
    while (true) {
      if (at + BLOCK > total) throw bad("it ends without the two zero blocks");
      await readAt(head, at);
      if (head.every((x) => x === 0)) return members;
      let sum = 0;
      for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : head[i]!;
      if (number(head, 148, 8) !== sum) throw bad(`a header's checksum is wrong (at byte ${at})`);
      const type = String.fromCharCode(head[156]!) === "\0" ? "0" : String.fromCharCode(head[156]!);
      const size = number(head, 124, 12);
      const offset = at + BLOCK;
      if (offset + size > total) throw bad(`a member's content runs past the end (at byte ${at})`);
      at = offset + size + padding(size).length;
      if (type === "x" || type === "g" || type === "L" || type === "K") {
        if (size > 1024 * 1024) throw bad("an extended header over 1 MiB");
        const body = Buffer.alloc(size);
        await readAt(body, offset);
        if (type === "x") pending = { ...pending, ...paxRecords(body) };
        else if (type === "L") longName = cstr(body, 0, size);
        else if (type === "K") longLink = cstr(body, 0, size);
        continue; // a global header ("g") changes nothing kiln reads
      }
      const prefix = cstr(head, 257, 6) === "ustar" ? cstr(head, 345, 155) : "";
      const plain = prefix ? `${prefix}/${cstr(head, 0, 100)}` : cstr(head, 0, 100);
      const realSize = pending.size !== undefined ? Number(pending.size) : size;
      if (!Number.isSafeInteger(realSize) || realSize < 0) throw bad("a pax size is not a number");
      if (pending.size !== undefined) {
        // pax carries sizes ustar cannot: the content is that long, not what the header said.
        if (offset + realSize > total) throw bad("a member's content runs past the end");
        at = offset + realSize + padding(realSize).length;
      }
      members.push({
        name: pending.path ?? longName ?? plain,
        type,
        mode: number(head, 100, 8),
        uid: number(head, 108, 8),
        gid: number(head, 116, 8),
        size: realSize,
        offset,
        linkname: pending.linkpath ?? longLink ?? cstr(head, 157, 100),
      });
      if (members.length > max) throw bad(`more than ${max} members`);
      pending = {};
      longName = undefined;
      longLink = undefined;
    }
  } finally {
    await fh.close();
  }
}
