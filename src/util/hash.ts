import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";

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
