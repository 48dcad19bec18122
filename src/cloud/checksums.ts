import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { KilnError } from "../util/errors.js";

export type HashAlgo = "sha256" | "sha512";

/** The algorithm a hex digest's length gives away. */
export function algoOf(hex: string): HashAlgo {
  if (/^[0-9a-f]{128}$/i.test(hex)) return "sha512";
  if (/^[0-9a-f]{64}$/i.test(hex)) return "sha256";
  throw new KilnError("IMPORT_BAD_SUM", `not a SHA-512 or SHA-256 digest: ${hex}`);
}

/**
 * The digest for `file` in a checksum list: GNU style ("HEX  name" or
 * "HEX *name") as in Debian's SHA512SUMS, or BSD style ("SHA512 (name) = HEX")
 * as in Fedora's CHECKSUM files.
 */
export function findSum(list: string, file: string): string | undefined {
  for (const line of list.split("\n")) {
    const gnu = /^([0-9a-fA-F]{64}|[0-9a-fA-F]{128})\s+\*?(.+?)\s*$/.exec(line);
    if (gnu && (gnu[2] === file || gnu[2]!.split("/").pop() === file)) return gnu[1]!.toLowerCase();
    const bsd = /^SHA(256|512) \((.+)\) = ([0-9a-fA-F]+)\s*$/.exec(line);
    if (bsd && (bsd[2] === file || bsd[2]!.split("/").pop() === file)) return bsd[3]!.toLowerCase();
  }
  return undefined;
}

export async function hashFile(path: string, algo: HashAlgo): Promise<string> {
  const h = createHash(algo);
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}
