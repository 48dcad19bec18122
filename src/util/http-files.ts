import { close as closeFd, open as openFd, read as readFd, type Stats } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { isAbsolute, join, normalize, relative, sep } from "node:path";

/**
 * Serve one file from under `root` for GET and HEAD, with ETag /
 * If-None-Match and a single byte Range (what iPXE, curl and wget resume
 * with). The path is checked to stay inside `root`, before and after
 * symlinks are resolved: a link inside the directory that leads out of it is
 * refused like `..` (400), so whoever can drop a symlink into an artifact
 * directory still cannot have the server read files elsewhere.
 */
export async function serveFile(
  req: IncomingMessage,
  res: ServerResponse,
  root: string,
  relPath: string,
): Promise<number> {
  const file = safeJoin(root, relPath);
  if (!file) return send(res, 400, "bad path\n");
  let st: Stats;
  let real: string;
  try {
    real = await realpath(file);
    if (!inside(await realpath(root), real)) return send(res, 400, "bad path\n");
    st = await stat(real);
  } catch {
    return send(res, 404, "not found\n");
  }
  if (!st.isFile()) return send(res, 404, "not found\n");
  const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
  res.setHeader("ETag", etag);
  res.setHeader("Last-Modified", st.mtime.toUTCString());
  res.setHeader("Accept-Ranges", "bytes");
  res.setHeader("Content-Type", "application/octet-stream");
  if (req.headers["if-none-match"] === etag) return send(res, 304);

  let start = 0;
  let end = st.size - 1;
  let status = 200;
  const range = req.headers.range;
  if (range && (!req.headers["if-range"] || req.headers["if-range"] === etag)) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    if (!m || (m[1] === "" && m[2] === ""))
      return send(res, 416, "", { "Content-Range": `bytes */${st.size}` });
    if (m[1] === "") {
      start = Math.max(0, st.size - Number(m[2]));
    } else {
      start = Number(m[1]);
      if (m[2] !== "") end = Math.min(end, Number(m[2]));
    }
    if (start > end || start >= st.size)
      return send(res, 416, "", { "Content-Range": `bytes */${st.size}` });
    status = 206;
    res.setHeader("Content-Range", `bytes ${start}-${end}/${st.size}`);
  }
  res.statusCode = status;
  res.setHeader("Content-Length", String(end - start + 1));
  if (req.method === "HEAD" || st.size === 0) {
    res.end();
    return status;
  }
  await sendRange(real, start, end, res);
  return status;
}

/**
 * Buffers for sendRange, reused across responses: a read stream allocates a
 * new 64 KiB chunk for every read, and with 50 clients fetching a 56 MiB
 * initrd the server's memory grew by ~90 MiB of garbage waiting for the
 * collector. One buffer per response in flight, handed back when it ends,
 * keeps memory flat: at most CHUNK times the clients being served.
 */
const CHUNK = 256 * 1024;
const POOL_MAX = 64;
const pool: Buffer[] = [];

/**
 * Bytes start..end of `path` to `res`, one pooled buffer at a time, each read
 * only once the last is written. Callbacks, not promises: at ~6,000 chunks a
 * second, every promise and closure per chunk is garbage that grows the
 * collector's young generation (RSS +90 MiB in 40 s with async/await).
 */
function sendRange(path: string, start: number, end: number, res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    openFd(path, "r", (err, fd) => {
      if (err) {
        res.destroy();
        return resolve();
      }
      const buf = pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
      let at = start;
      let gone = false;
      const finish = () => {
        res.off("close", onClose);
        closeFd(fd, () => {
          // Nothing writes from it now: the last write called back, or the socket
          // closed, which drops what was still queued.
          if (pool.length < POOL_MAX) pool.push(buf);
          resolve();
        });
      };
      // A client that goes away mid-file ends the loop; a write it leaves
      // pending may never call back.
      const onClose = () => {
        if (gone) return;
        gone = true;
        finish();
      };
      res.once("close", onClose);
      const next = (): void => {
        if (gone) return;
        if (at > end) {
          gone = true;
          res.end();
          finish();
          return;
        }
        readFd(fd, buf, 0, Math.min(CHUNK, end - at + 1), at, (rerr, n) => {
          if (gone) return;
          // The file shrank under us (or failed): the promised length cannot be sent.
          if (rerr || n === 0) {
            gone = true;
            res.destroy();
            finish();
            return;
          }
          at += n;
          res.write(n === CHUNK ? buf : buf.subarray(0, n), (werr) => {
            if (werr) {
              if (!gone) {
                gone = true;
                res.destroy();
                finish();
              }
              return;
            }
            next();
          });
        });
      };
      next();
    });
  });
}

/** root + rel, or undefined if rel is absolute, has NULs, or climbs out of root. */
export function safeJoin(root: string, rel: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(rel);
  } catch {
    return undefined;
  }
  if (decoded.includes("\0") || isAbsolute(decoded)) return undefined;
  const full = normalize(join(root, decoded));
  return inside(root, full) ? full : undefined;
}

/** Whether `path` is strictly below `root` (both already absolute and normalized). */
function inside(root: string, path: string): boolean {
  const r = relative(root, path);
  return !(r === "" || r.startsWith(`..${sep}`) || r === ".." || isAbsolute(r));
}

export function send(
  res: ServerResponse,
  status: number,
  body = "",
  headers: Record<string, string> = {},
): number {
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  if (body && !res.hasHeader("Content-Type"))
    res.setHeader("Content-Type", "text/plain; charset=utf-8");
  res.end(body);
  return status;
}
