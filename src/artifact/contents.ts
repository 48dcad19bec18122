import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
} from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";

/** Beside the artifacts: one line per path of the root tree, sorted (what `kiln diff` reads). */
export const CONTENTS_FILE = "contents.tsv";

export interface ContentsEntry {
  path: string;
  /** type, mode, owner, size and the bytes' sha256 (a symlink's target, a device's numbers). */
  what: string;
}

/**
 * `PATH\tTYPE MODE UID:GID SIZE DIGEST` for every path under `root`, sorted
 * bytewise. Times are left out: they are pinned by the build, and a listing
 * is for telling content apart.
 */
export async function treeListing(root: string): Promise<string> {
  const lines: string[] = [];
  // Synchronous on purpose: thousands of small files, where a promise per
  // read costs more than the hashing (2.3 s against 0.6 s for a minimal root).
  const visit = (p: string, rel: string): void => {
    const st = lstatSync(p);
    const meta = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
    const kind = st.isCharacterDevice() ? "c" : st.isBlockDevice() ? "b" : "o";
    let what: string;
    if (st.isSymbolicLink()) what = `l ${meta} -> ${readlinkSync(p)}`;
    else if (st.isDirectory()) what = `d ${meta}`;
    else if (st.isFile()) what = `f ${meta} ${st.size} ${fileSha256(p, st.size)}`;
    else what = `${kind} ${meta} ${st.rdev}`;
    lines.push(`/${rel}\t${what}`);
    if (st.isDirectory())
      for (const n of readdirSync(p).sort()) visit(join(p, n), rel ? `${rel}/${n}` : n);
  };
  visit(root, "");
  return `${lines.sort().join("\n")}\n`;
}

/**
 * treeListing on a worker thread, so that the steps after it run meanwhile
 * (0.6 s for a minimal root, beside a disk step of 1.4 s). Nothing may
 * change or move the tree until it settles. Run from the TypeScript sources
 * (unit tests) there is no compiled worker, and it runs here.
 */
export function treeListingBeside(root: string): Promise<string> {
  const worker = new URL("./contents-worker.js", import.meta.url);
  if (!existsSync(fileURLToPath(worker))) return treeListing(root);
  return new Promise((resolve, reject) => {
    const w = new Worker(worker, { workerData: root });
    let listing: string | undefined;
    w.once("message", (m: string) => {
      listing = m;
    });
    w.once("error", reject);
    w.once("exit", (code) => {
      if (listing !== undefined) resolve(listing);
      else reject(new Error(`listing ${root}: worker exited with ${code}`));
    });
  });
}

export function parseListing(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split("\n")) {
    const tab = line.indexOf("\t");
    if (tab > 0) m.set(line.slice(0, tab), line.slice(tab + 1));
  }
  return m;
}

export interface TreeDifference {
  path: string;
  a?: string;
  b?: string;
}

/** Every path whose listing differs (added, removed or changed), in path order. */
export function listingDifferences(
  a: Map<string, string>,
  b: Map<string, string>,
): TreeDifference[] {
  const paths = [...new Set([...a.keys(), ...b.keys()])].sort();
  const out: TreeDifference[] = [];
  for (const path of paths) {
    const x = a.get(path);
    const y = b.get(path);
    if (x === y) continue;
    out.push({ path, ...(x !== undefined ? { a: x } : {}), ...(y !== undefined ? { b: y } : {}) });
  }
  return out;
}

const CHUNK = 1 << 20;
const buf = Buffer.alloc(CHUNK);

function fileSha256(p: string, size: number): string {
  const h = createHash("sha256");
  const fd = openSync(p, "r");
  try {
    for (let at = 0; at < size; ) {
      const n = readSync(fd, buf, 0, CHUNK, at);
      if (n <= 0) break;
      h.update(buf.subarray(0, n));
      at += n;
    }
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}
