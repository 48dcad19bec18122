import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, readFileSync } from "node:fs";
import { mkdir, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { KilnError } from "../util/errors.js";
import { padding, TAR_END, type TarHeader, tarHeader } from "../util/tar-format.js";

/**
 * OCI image layouts written and read by kiln itself (no umoci): blobs are
 * named by their sha256, JSON is written with a fixed key order and no
 * timestamps but the ones given, so the same inputs give the same digests.
 */

export const MEDIA = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: "application/vnd.oci.image.layer.v1.tar",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
} as const;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

/** What goes into one layer: directories and regular files, each from a file or from bytes. */
export type LayerMember = TarHeader & ({ from: string } | { data: Buffer } | { type: "dir" });

export const blobPath = (dir: string, digest: string) => join(dir, "blobs", ...digest.split(":"));

const sha256 = (b: Buffer | string) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function putBlob(dir: string, bytes: Buffer | string): Promise<Descriptor> {
  const digest = sha256(bytes);
  await writeFile(blobPath(dir, digest), bytes);
  return { mediaType: "", digest, size: Buffer.byteLength(bytes) };
}

/** An empty layout (or the one already there: layouts hold many images, one per tag). */
export async function initLayout(dir: string): Promise<void> {
  await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
  if (!existsSync(join(dir, "oci-layout")))
    await writeFile(join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  if (!existsSync(join(dir, "index.json")))
    await writeFile(
      join(dir, "index.json"),
      JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.index, manifests: [] }),
    );
}

/**
 * Write one uncompressed tar layer into the layout, members in the order
 * given, streaming each file's content once: the layer's digest and, for
 * every member read from a file, that file's sha256 come out of the same pass.
 * `onBytes` is told how far it is (for progress on multi-GiB disks).
 */
export async function writeLayer(
  dir: string,
  members: LayerMember[],
  onBytes?: (done: number, total: number) => void,
): Promise<{ layer: Descriptor; fileSha256: Record<string, string> }> {
  const layerHash = createHash("sha256");
  const tmp = join(dir, "blobs", "sha256", `.layer-${process.pid}-${Date.now()}`);
  const out = createWriteStream(tmp);
  const fileSha256: Record<string, string> = {};
  let size = 0;
  let total = 0;
  for (const m of members) if ("from" in m) total += m.size;
  let done = 0;
  const put = async (b: Buffer) => {
    layerHash.update(b);
    size += b.length;
    if (!out.write(b)) await new Promise<void>((r) => out.once("drain", () => r()));
  };
  try {
    for (const m of members) {
      const sizeNow = "from" in m ? (await stat(m.from)).size : "data" in m ? m.data.length : 0;
      if ("from" in m && sizeNow !== m.size)
        throw new KilnError("PUSH_CHANGED", `${m.from} changed size while it was being packed`);
      await put(tarHeader({ ...m, size: sizeNow }));
      if ("data" in m) await put(m.data);
      if ("from" in m) {
        const h = createHash("sha256");
        for await (const chunk of createReadStream(m.from, { highWaterMark: 1 << 20 })) {
          h.update(chunk as Buffer);
          await put(chunk as Buffer);
          done += (chunk as Buffer).length;
          onBytes?.(done, total);
        }
        fileSha256[m.name] = h.digest("hex");
      }
      await put(padding(sizeNow));
    }
    await put(TAR_END);
    await new Promise<void>((resolve, reject) =>
      out.end((e?: Error | null) => (e ? reject(e) : resolve())),
    );
  } catch (err) {
    out.destroy();
    throw err;
  }
  const digest = `sha256:${layerHash.digest("hex")}`;
  await rename(tmp, blobPath(dir, digest));
  return { layer: { mediaType: MEDIA.layer, digest, size }, fileSha256 };
}

export interface ImageFacts {
  architecture: string;
  /** RFC 3339; the build's time, so a second push of one build gives the same config. */
  created: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  history: string;
}

/** Sort an object's keys, so the JSON of a record does not depend on how it was assembled. */
const sorted = (o: Record<string, string>) =>
  Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

/**
 * Add an image of one or more layers to the layout under `tag` (replacing
 * an image of that tag): its config, manifest and the index entry.
 */
export async function addImage(
  dir: string,
  tag: string,
  layers: Descriptor[],
  facts: ImageFacts,
): Promise<{ manifest: Descriptor; config: Descriptor }> {
  const config = {
    created: facts.created,
    architecture: facts.architecture,
    os: "linux",
    config: { Labels: sorted(facts.labels) },
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.digest) },
    history: [{ created: facts.created, created_by: facts.history }],
  };
  const c = { ...(await putBlob(dir, JSON.stringify(config))), mediaType: MEDIA.config };
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MEDIA.manifest,
    config: c,
    layers,
    annotations: sorted(facts.annotations),
  };
  const m = { ...(await putBlob(dir, JSON.stringify(manifest))), mediaType: MEDIA.manifest };
  const indexFile = join(dir, "index.json");
  const index = JSON.parse(readFileSync(indexFile, "utf8")) as { manifests: Descriptor[] };
  const REF = "org.opencontainers.image.ref.name";
  index.manifests = [
    ...index.manifests.filter((d) => d.annotations?.[REF] !== tag),
    { ...m, annotations: { [REF]: tag } },
  ];
  await writeFile(
    indexFile,
    JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.index, ...index }),
  );
  return { manifest: m, config: c };
}

/** Debian's architecture names as OCI (Go) spells them. */
export function ociArchitecture(debian: string): string {
  return (
    ({ i386: "386", armhf: "arm", armel: "arm", ppc64el: "ppc64le" } as Record<string, string>)[
      debian
    ] ?? debian
  );
}

/** A blob's sha256 and size, checked against its descriptor; a clear error naming it otherwise. */
export async function verifyBlob(dir: string, d: Descriptor, what: string): Promise<void> {
  if (!/^sha256:[0-9a-f]{64}$/.test(d.digest))
    throw new KilnError("OCI_DIGEST", `${what}: digest ${d.digest} is not a sha256 kiln can check`);
  const file = blobPath(dir, d.digest);
  if (!existsSync(file)) throw new KilnError("OCI_DIGEST", `${what}: blob ${d.digest} is missing`);
  const size = (await stat(file)).size;
  if (size !== d.size)
    throw new KilnError(
      "OCI_DIGEST",
      `${what}: blob ${d.digest} is ${size} bytes, its descriptor says ${d.size}`,
    );
  const h = createHash("sha256");
  await pipeline(createReadStream(file), h);
  const got = `sha256:${h.digest("hex")}`;
  if (got !== d.digest)
    throw new KilnError("OCI_DIGEST", `${what}: blob ${d.digest} hashes to ${got}`);
}
