import { createWriteStream, existsSync, statSync } from "node:fs";
import { rename } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { KilnError } from "../util/errors.js";
import { step } from "../util/log.js";

export const isUrl = (s: string) => /^https?:\/\//.test(s);

/** Seconds without a byte before a download is given up (and can be continued later). */
const STALL_S = Number(process.env.KILN_DOWNLOAD_STALL_S ?? 60);

const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

/**
 * Download `url` to `dest` with a progress line. The bytes go to
 * `dest.part` first; a later call continues it with an HTTP range request
 * (a server that ignores ranges makes it start over), and only a complete
 * download is renamed to `dest`.
 */
export async function download(
  url: string,
  dest: string,
): Promise<{ bytes: number; resumedAt: number }> {
  const part = `${dest}.part`;
  const have = existsSync(part) ? statSync(part).size : 0;
  const progress = step(`download ${url}`);
  try {
    // A server that stops sending (rather than closing) would otherwise hang the import forever.
    const stalled = new AbortController();
    let idle: NodeJS.Timeout | undefined;
    const alive = () => {
      clearTimeout(idle);
      idle = setTimeout(() => stalled.abort(new Error(`no data for ${STALL_S} s`)), STALL_S * 1000);
      idle.unref();
    };
    alive();
    const res = await fetch(url, {
      headers: have ? { Range: `bytes=${have}-` } : {},
      signal: stalled.signal,
    });
    let offset = 0;
    let total: number | undefined;
    if (res.status === 206) {
      offset = have;
      const m = /\/(\d+)$/.exec(res.headers.get("content-range") ?? "");
      total = m ? Number(m[1]) : undefined;
    } else if (res.status === 416 && have) {
      // The part file already holds everything the server has.
      progress.done(`${mib(have)} (already complete)`);
      await rename(part, dest);
      return { bytes: have, resumedAt: have };
    } else if (res.ok) {
      total = Number(res.headers.get("content-length") ?? "") || undefined;
    } else {
      throw new KilnError("IMPORT_DOWNLOAD", `GET ${url}: HTTP ${res.status} ${res.statusText}`);
    }
    if (!res.body) throw new KilnError("IMPORT_DOWNLOAD", `GET ${url}: empty response`);
    let got = offset;
    const started = performance.now();
    const body = Readable.fromWeb(res.body as import("node:stream/web").ReadableStream);
    body.on("data", (chunk: Buffer) => {
      alive();
      got += chunk.length;
      const rate = (got - offset) / Math.max(0.001, (performance.now() - started) / 1000);
      progress.detail(
        `${mib(got)}${total ? ` of ${mib(total)} (${Math.floor((got / total) * 100)}%)` : ""} at ${mib(rate)}/s`,
      );
    });
    try {
      await pipeline(body, createWriteStream(part, { flags: offset ? "a" : "w" }));
    } finally {
      clearTimeout(idle);
    }
    if (total !== undefined && got !== total)
      throw new KilnError("IMPORT_DOWNLOAD", `GET ${url}: got ${got} of ${total} bytes`, {
        hint: "run the same command again: it continues where this one stopped",
      });
    await rename(part, dest);
    progress.done(`${mib(got)}${offset ? ` (continued from ${mib(offset)})` : ""}`);
    return { bytes: got, resumedAt: offset };
  } catch (err) {
    progress.fail();
    if (err instanceof KilnError) throw err;
    throw new KilnError("IMPORT_DOWNLOAD", `GET ${url}: ${(err as Error).message}`, {
      hint: "run the same command again: it continues where this one stopped",
      cause: err,
    });
  }
}
