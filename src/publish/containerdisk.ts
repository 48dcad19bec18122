import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { basename, join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { KilnError } from "../util/errors.js";
import { listTar, type TarMember } from "../util/tar-format.js";
import {
  addImage,
  blobPath,
  type Descriptor,
  type ImageFacts,
  type ImageManifest,
  initLayout,
  MEDIA,
  verifyBlob,
  writeLayer,
} from "./layout.js";

/**
 * KubeVirt's containerDisk: a disk image as the one file under /disk/ of a
 * one-layer image, owned by uid/gid 107 (qemu in KubeVirt's launcher) and
 * only readable, so `containerDisk: { image: REF }` boots it as is.
 */
export const DISK_OWNER = 107;
export const DISK_MODE = 0o440;
export const DISK_FILE = /^[A-Za-z0-9][A-Za-z0-9._-]*\.(qcow2|raw|img)$/;

/** Facts kiln records on a pushed disk (as manifest annotations and config labels). */
export const ANNOTATION = {
  diskSha256: "dev.kiln.disk.sha256",
  diskFile: "dev.kiln.disk.file",
  kiln: "dev.kiln.version",
  spec: "dev.kiln.spec.name",
  specHash: "dev.kiln.spec.hash",
  sumsOf: "dev.kiln.sums.of",
} as const;

export interface DiskToPush {
  path: string;
  size: number;
  /** What the build's manifest says; the bytes packed must still hash to it. */
  sha256: string;
}

/**
 * Write the containerDisk image of `disk` into the layout `dir` as `tag`.
 * Nothing in it depends on when or where this runs (mtime 0, fixed owners
 * and modes, sorted JSON, the build's own time as `created`), so pushing one
 * build twice gives one digest.
 */
export async function writeContainerDisk(
  dir: string,
  tag: string,
  disk: DiskToPush,
  facts: ImageFacts,
  onBytes?: (done: number, total: number) => void,
): Promise<{ manifest: Descriptor; layer: Descriptor }> {
  const file = basename(disk.path);
  if (!DISK_FILE.test(file))
    throw new KilnError("PUSH_NO_DISK", `${file}: a containerDisk file must be NAME.qcow2|raw|img`);
  await initLayout(dir);
  const own = { uid: DISK_OWNER, gid: DISK_OWNER };
  const { layer, fileSha256 } = await writeLayer(
    dir,
    [
      { name: "disk", type: "dir", mode: 0o555, ...own, size: 0 },
      {
        name: `disk/${file}`,
        type: "file",
        mode: DISK_MODE,
        ...own,
        size: disk.size,
        from: disk.path,
      },
    ],
    onBytes,
  );
  const got = fileSha256[`disk/${file}`];
  if (got !== disk.sha256)
    throw new KilnError(
      "PUSH_CHANGED",
      `${file} hashes to ${got}, the build's manifest.json records ${disk.sha256}`,
      { hint: "the output was changed after the build: build it again" },
    );
  const stamp = { [ANNOTATION.diskSha256]: got, [ANNOTATION.diskFile]: file };
  const { manifest } = await addImage(dir, tag, [layer], {
    ...facts,
    labels: { ...facts.labels, ...stamp },
    annotations: { ...facts.annotations, ...stamp },
  });
  return { manifest, layer };
}

/**
 * The sums image: SHA256SUMS and, when signed, SHA256SUMS.sig, in one
 * layer, its annotations naming the image digest they vouch for.
 */
export async function writeSumsImage(
  dir: string,
  tag: string,
  of: string,
  files: { sums: Buffer; sig?: Buffer },
  facts: ImageFacts,
): Promise<Descriptor> {
  await initLayout(dir);
  const f = (name: string, data: Buffer) =>
    ({ name, type: "file", mode: 0o444, uid: 0, gid: 0, size: data.length, data }) as const;
  const { layer } = await writeLayer(dir, [
    f("SHA256SUMS", files.sums),
    ...(files.sig ? [f("SHA256SUMS.sig", files.sig)] : []),
  ]);
  const stamp = { [ANNOTATION.sumsOf]: of };
  const { manifest } = await addImage(dir, tag, [layer], {
    ...facts,
    labels: { ...facts.labels, ...stamp },
    annotations: { ...facts.annotations, ...stamp },
  });
  return manifest;
}

/** The tag the sums of image DIGEST are pushed under (cosign's sha256-HEX.sig convention). */
export const sumsTag = (digest: string) => `${digest.replace(":", "-")}.sums`;

export interface FoundImage {
  manifest: ImageManifest;
  /** The image manifest's digest (what `skopeo inspect` calls Digest). */
  digest: string;
}

/**
 * The one image in a layout that skopeo just wrote, every blob it names
 * (manifest, config, layers) hashed and compared with its digest and size.
 */
export async function readVerifiedImage(dir: string): Promise<FoundImage> {
  let index: { manifests?: Descriptor[] };
  try {
    index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8"));
  } catch {
    throw new KilnError("OCI_DIGEST", `${dir} holds no readable index.json`);
  }
  const entries = index.manifests ?? [];
  if (entries.length !== 1)
    throw new KilnError("OCI_NOT_DISK", `expected one image, the registry sent ${entries.length}`);
  const entry = entries[0]!;
  if (entry.mediaType !== MEDIA.manifest && entry.mediaType !== MEDIA.dockerManifest)
    throw new KilnError("OCI_NOT_DISK", `not a single image: ${entry.mediaType}`);
  await verifyBlob(dir, entry, "manifest");
  const manifest = JSON.parse(readFileSync(blobPath(dir, entry.digest), "utf8")) as ImageManifest;
  if (manifest.schemaVersion !== 2 || !manifest.config || !Array.isArray(manifest.layers))
    throw new KilnError("OCI_NOT_DISK", "the manifest is not an OCI or Docker v2 image manifest");
  await verifyBlob(dir, manifest.config, "config");
  for (const [i, l] of manifest.layers.entries()) await verifyBlob(dir, l, `layer ${i + 1}`);
  return { manifest, digest: entry.digest };
}

export interface DiskInImage {
  /** The uncompressed layer the disk is in (the blob itself, or a decompressed copy). */
  tar: string;
  member: TarMember;
  layer: Descriptor;
  file: string;
}

const GZIP = new Set<string>([MEDIA.layerGzip, MEDIA.dockerLayerGzip]);
const PLAIN = new Set<string>([MEDIA.layer, "application/vnd.docker.image.rootfs.diff.tar"]);

/** A tar path as it would land: "./disk/x" and "/disk/x" are "disk/x"; null if it leaves the root. */
function landing(name: string): string | null {
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.some((p) => p === "..")) return null;
  return parts.join("/");
}

/**
 * Find the disk in an image's layers and judge every layer first: any link,
 * device, whiteout or path that climbs out refuses the whole image, as does
 * no disk or more than one, or a disk over `maxBytes`. Layers are read as
 * lists of headers, never unpacked; gzip layers are decompressed into
 * `scratch`, bounded by `maxBytes`, first.
 */
export async function findDisk(
  dir: string,
  image: FoundImage,
  scratch: string,
  maxBytes: number,
): Promise<DiskInImage> {
  const found: DiskInImage[] = [];
  for (const [i, layer] of image.manifest.layers.entries()) {
    let tar = blobPath(dir, layer.digest);
    if (GZIP.has(layer.mediaType)) {
      tar = join(scratch, `layer-${i}.tar`);
      await gunzipBounded(blobPath(dir, layer.digest), tar, maxBytes + 64 * 1024 * 1024);
    } else if (!PLAIN.has(layer.mediaType))
      throw new KilnError(
        "OCI_NOT_DISK",
        `layer ${i + 1} is ${layer.mediaType}, not a tar kiln reads`,
      );
    const members = await listTar(tar);
    for (const m of members) {
      const where = landing(m.name);
      const what = `layer ${i + 1}: ${m.name}`;
      if (where === null)
        throw new KilnError("OCI_NOT_DISK", `${what} points outside the image's root`);
      if (m.type !== "0" && m.type !== "5")
        throw new KilnError(
          "OCI_NOT_DISK",
          `${what} is ${m.type === "2" ? `a symlink to ${m.linkname}` : m.type === "1" ? `a hard link to ${m.linkname}` : `of tar type ${m.type}`}; a containerDisk holds only files and directories`,
        );
      if (where.split("/").some((p) => p.startsWith(".wh.")))
        throw new KilnError(
          "OCI_NOT_DISK",
          `${what} is a whiteout; a containerDisk deletes nothing`,
        );
      if (m.type === "0" && where.startsWith("disk/")) {
        const file = where.slice("disk/".length);
        if (!DISK_FILE.test(file))
          throw new KilnError("OCI_NOT_DISK", `${what}: only NAME.qcow2|raw|img belong in disk/`);
        if (m.size > maxBytes)
          throw new KilnError(
            "OCI_NOT_DISK",
            `${what} is ${m.size} bytes, over the ${maxBytes} allowed`,
          );
        found.push({ tar, member: m, layer, file });
      }
    }
  }
  if (found.length !== 1)
    throw new KilnError(
      "OCI_NOT_DISK",
      found.length
        ? `the image has ${found.length} disks (${found
            .map((f) => f.file)
            .sort()
            .join(", ")}); kiln imports one`
        : "the image has no disk/NAME.qcow2 (or .raw, .img): it is not a containerDisk",
    );
  return found[0]!;
}

async function gunzipBounded(from: string, to: string, max: number): Promise<void> {
  let n = 0;
  const cap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      n += chunk.length;
      if (n > max) done(new KilnError("OCI_NOT_DISK", `a layer unpacks to more than ${max} bytes`));
      else done(null, chunk);
    },
  });
  try {
    await pipeline(createReadStream(from), createGunzip(), cap, createWriteStream(to));
  } catch (err) {
    await rm(to, { force: true });
    if (err instanceof KilnError) throw err;
    throw new KilnError("OCI_LAYER_BAD", `a gzip layer does not decompress: ${String(err)}`);
  }
}

/** Copy one member's content out of its tar; returns its sha256 (hex). */
export async function extractMember(d: DiskInImage, to: string): Promise<string> {
  const h = createHash("sha256");
  const hashing = new Transform({
    transform(chunk: Buffer, _enc, done) {
      h.update(chunk);
      done(null, chunk);
    },
  });
  const { offset, size } = d.member;
  if (size === 0) throw new KilnError("OCI_NOT_DISK", `${d.file} is empty`);
  await pipeline(
    createReadStream(d.tar, { start: offset, end: offset + size - 1 }),
    hashing,
    createWriteStream(to, { mode: 0o600 }),
  );
  return h.digest("hex");
}
