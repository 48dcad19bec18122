import { createHash } from "node:crypto";
import {
  createReadStream,
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
} from "node:fs";
import { join } from "node:path";

export function sha256(text: string | Buffer): string {
  return createHash("sha256").update(text).digest("hex");
}

/** A short content hash used as a cache key. */
export function cacheKey(...parts: unknown[]): string {
  return sha256(JSON.stringify(parts)).slice(0, 16);
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/**
 * A digest of a file or directory tree as a build would copy it: every
 * path (sorted), its type and mode, a file's bytes and a symlink's target.
 * "missing" when there is nothing at `path` (the build reports that itself).
 */
export function treeDigest(path: string): string {
  const h = createHash("sha256");
  const visit = (p: string, rel: string): void => {
    const st = lstatSync(p);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) h.update(`l ${rel} ${readlinkSync(p)}\n`);
    else if (st.isDirectory()) {
      h.update(`d ${rel} ${mode}\n`);
      for (const n of readdirSync(p).sort()) visit(join(p, n), rel ? `${rel}/${n}` : n);
    } else if (st.isFile()) h.update(`f ${rel} ${mode} ${st.size}\n`).update(readFileSync(p));
    else h.update(`o ${rel} ${mode}\n`);
  };
  if (!existsSync(path)) return "missing";
  visit(path, "");
  return h.digest("hex");
}

/**
 * A UUID that is a function of `seed` and `label` (shaped as a version-4
 * one): filesystem and partition ids of a build follow from what was built,
 * so the same spec and lock give the same disk bytes.
 */
export function derivedUuid(seed: string, label: string): string {
  const h = createHash("sha256").update(`${seed}\0${label}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x40;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** `bytes` hex-encoded bytes that are a function of `seed` and `label`. */
export function derivedHex(seed: string, label: string, bytes: number): string {
  return createHash("sha256")
    .update(`${seed}\0${label}`)
    .digest()
    .subarray(0, bytes)
    .toString("hex");
}
