import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { partitionNumber, partitions, rootPartition } from "../image/partitions.js";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { removeTree } from "../util/fsx.js";
import { cacheKey } from "../util/hash.js";
import { log, step } from "../util/log.js";
import { algoOf, findSum, hashFile } from "./checksums.js";
import { download, isUrl } from "./download.js";
import { type DiskRecord, disksDir, findDisk, NAME_RE } from "./store.js";

export interface ImportOptions {
  /** Expected digest (SHA-512, or SHA-256 by its length). */
  sum?: string;
  /** A SHA512SUMS-style list (URL or file) the source's file name is looked up in. */
  checksums?: string;
  name?: string;
  /** Replace a stored disk of the same name. */
  force?: boolean;
  /** What the record names as the source, when `source` is a local copy of it (oci://REPO@DIGEST). */
  recordSource?: string;
}

const ARCHIVE = /\.(tar|tar\.gz|tgz|tar\.xz|txz|tar\.zst)$/;

/** "debian-12-genericcloud-amd64.tar.xz" → "debian-12-genericcloud-amd64". */
export function nameFrom(source: string): string {
  const file = basename(source.split("?")[0]!);
  return file
    .replace(ARCHIVE, "")
    .replace(/\.(xz|gz|zst)$/, "")
    .replace(/\.(qcow2|raw|img|vmdk|vhdx|vdi)$/, "")
    .toLowerCase()
    .replace(/[^a-z0-9._-]/g, "-");
}

async function expectedSum(source: string, o: ImportOptions): Promise<string | undefined> {
  if (o.sum) {
    algoOf(o.sum);
    return o.sum.toLowerCase();
  }
  if (!o.checksums) return undefined;
  const list = isUrl(o.checksums)
    ? await fetch(o.checksums).then(async (r) => {
        if (!r.ok) throw new KilnError("IMPORT_CHECKSUMS", `GET ${o.checksums}: HTTP ${r.status}`);
        return r.text();
      })
    : readFileSync(o.checksums, "utf8");
  const file = basename(source.split("?")[0]!);
  const sum = findSum(list, file);
  if (!sum)
    throw new KilnError("IMPORT_CHECKSUMS", `${o.checksums} lists no checksum for ${file}`, {
      hint: "check the file name, or give the digest with --sha512",
    });
  return sum;
}

/** The disk image inside what was downloaded: the file itself, a decompressed copy, or the largest image in an archive. */
async function unpack(file: string, dir: string): Promise<string> {
  const name = basename(file);
  if (ARCHIVE.test(name)) {
    const into = join(dir, "unpacked");
    await mkdir(into);
    await exec("tar", ["-C", into, "--sparse", "-xf", file]);
    const found: { path: string; size: number }[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile() && /(\.(raw|img|qcow2|vmdk|vhdx)|^disk)$/.test(e.name))
          found.push({ path: p, size: statSync(p).size });
      }
    };
    walk(into);
    const best = found.sort((a, b) => b.size - a.size)[0];
    if (!best)
      throw new KilnError("IMPORT_NO_DISK", `${name} holds no disk image (.raw, .img, .qcow2)`);
    return best.path;
  }
  const m = /\.(xz|gz|zst)$/.exec(name);
  if (m) {
    const out = join(dir, name.slice(0, -m[0].length));
    const tool = { xz: "xz", gz: "gzip", zst: "zstd" }[m[1] as "xz" | "gz" | "zst"];
    await exec("sh", [
      "-c",
      `${tool} -dc "$1" | cp --sparse=always /dev/stdin "$2"`,
      "sh",
      file,
      out,
    ]);
    return out;
  }
  return file;
}

/**
 * Download (or take) a vendor disk image, verify it, unpack it and store it
 * as STORE/disks/NAME. Nothing is stored unless every step succeeded; a
 * checksum mismatch also deletes the download, so a retry fetches it anew.
 */
export async function importDisk(source: string, o: ImportOptions = {}): Promise<DiskRecord> {
  const name = o.name ?? nameFrom(source);
  if (!NAME_RE.test(name))
    throw new KilnError("IMPORT_NAME", `"${name}" is not a usable name`, {
      hint: "give one with --name (lower-case letters, digits, '.', '_', '-')",
    });
  if (findDisk(name) && !o.force)
    throw new KilnError("IMPORT_EXISTS", `a disk named ${name} is already imported`, {
      hint: "pick another --name, add --force to replace it, or `kiln disks rm` it",
    });
  if (!isUrl(source) && !existsSync(source))
    throw new KilnError("IMPORT_SOURCE", `${source} does not exist`);
  const want = await expectedSum(source, o);

  await mkdir(disksDir(), { recursive: true });
  const downloads = disksDir(".downloads");
  await mkdir(downloads, { recursive: true });
  let file = resolve(source);
  if (isUrl(source)) {
    // Keyed by URL, so an interrupted download of the same URL continues.
    file = join(downloads, `${cacheKey(source)}-${basename(source.split("?")[0]!)}`);
    if (!existsSync(file)) await download(source, file);
    else log.info(`using the download of ${source} kept from an earlier try`);
  }

  if (want) {
    const algo = algoOf(want);
    const verifying = step(`verify ${algo}`);
    const got = await hashFile(file, algo);
    if (got !== want) {
      verifying.fail();
      if (isUrl(source)) await rm(file, { force: true });
      throw new KilnError(
        "IMPORT_CHECKSUM",
        `checksum mismatch for ${basename(file)}\n  expected ${algo} ${want}\n  got      ${algo} ${got}`,
        {
          hint: isUrl(source)
            ? "the download was deleted; nothing was stored"
            : "nothing was stored",
        },
      );
    }
    verifying.done("matches");
  } else log.warn(`${source} is not verified: give --sha512 SUM or --checksums FILE`);

  const tmp = await mkdtemp(join(disksDir(), `.import-${name}-`));
  const dropCleanup = onCleanup(`import scratch ${tmp}`, () => removeTree(tmp));
  try {
    const storing = step(`unpack and store as ${name}`);
    const image = await unpack(file, tmp);
    const info = JSON.parse((await exec("qemu-img", ["info", "--output=json", image])).stdout) as {
      format: string;
      "virtual-size": number;
    };
    await exec("qemu-img", ["convert", "-O", "raw", "-S", "4k", image, join(tmp, "disk.raw")]);
    const parts = await partitions(join(tmp, "disk.raw")).catch(() => {
      throw new KilnError(
        "IMPORT_NO_TABLE",
        `${basename(image)} has no partition table kiln can read`,
      );
    });
    const root = await rootPartition(join(tmp, "disk.raw"));
    const record: DiskRecord = {
      name,
      source: o.recordSource ?? (isUrl(source) ? source : resolve(source)),
      verified: want ? `${algoOf(want)}:${want}` : null,
      format: info.format,
      virtualSize: info["virtual-size"],
      partitions: parts.map((p) => ({
        number: partitionNumber(p),
        ...(p.name ? { name: p.name } : {}),
        type: p.type,
        size: p.size * 512,
      })),
      root: partitionNumber(root),
      imported: new Date().toISOString(),
    };
    await writeFile(join(tmp, "disk.json"), `${JSON.stringify(record, null, 2)}\n`);
    await rm(join(tmp, "unpacked"), { recursive: true, force: true });
    if (image.startsWith(tmp) && image !== join(tmp, "disk.raw")) await rm(image, { force: true });
    if (findDisk(name)) await removeTree(disksDir(name));
    await rename(tmp, disksDir(name));
    storing.done(
      `${(record.virtualSize / 2 ** 30).toFixed(1)} GiB disk, root is partition ${record.root}`,
    );
    if (isUrl(source)) await rm(file, { force: true });
    return record;
  } catch (err) {
    await removeTree(tmp);
    throw err;
  } finally {
    dropCleanup();
  }
}
