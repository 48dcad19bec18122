import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { removeTree } from "../util/fsx.js";
import { log, step } from "../util/log.js";
import { scratchDir } from "../util/paths.js";
import { sumsTag, writeContainerDisk, writeSumsImage } from "./containerdisk.js";
import type { Descriptor, ImageFacts } from "./layout.js";
import { ociArchitecture } from "./layout.js";
import { type Access, pushLayout, type RegistryRef, refText } from "./registry.js";

/** What `kiln push` needs of a build (the CLI reads it from manifest.json). */
export interface BuildToPush {
  dir: string;
  name: string;
  version: string;
  /** The kiln that built it. */
  kiln: string;
  specHash: string;
  builtAt: string;
  architecture: string;
  distribution: string;
  disk: { path: string; size: number; sha256: string; format: string };
}

export interface PushResult {
  ref: string;
  digest: string;
  layers: Descriptor[];
  disk: { file: string; format: string; sha256: string };
  /** The sums image, when there was a SHA256SUMS to push. */
  sums: { ref: string; digest: string; signed: boolean } | null;
}

/** The GNU sha256sum line of `file` in `list`, if any ("HEX  name" or "HEX *name"). */
export function sumIn(list: string, file: string): string | undefined {
  for (const line of list.split("\n")) {
    const m = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line.trimEnd());
    if (m && (m[2] === file || m[2]!.split("/").pop() === file)) return m[1]!.toLowerCase();
  }
  return undefined;
}

/** The build's SHA256SUMS (and its signature), or ones written and signed now with `signKey`. */
async function sumsFor(
  b: BuildToPush,
  scratch: string,
  signKey: string | undefined,
): Promise<{ sums: Buffer; sig?: Buffer } | undefined> {
  const file = basename(b.disk.path);
  const own = join(b.dir, "SHA256SUMS");
  let sums: Buffer;
  if (existsSync(own)) {
    sums = readFileSync(own);
    const listed = sumIn(sums.toString("utf8"), file);
    if (listed !== b.disk.sha256)
      throw new KilnError(
        "PUSH_SUMS",
        listed
          ? `${own} gives ${file} as ${listed}, the build's manifest as ${b.disk.sha256}`
          : `${own} has no line for ${file}`,
      );
  } else if (signKey) sums = Buffer.from(`${b.disk.sha256}  ${file}\n`);
  else return undefined;
  if (!signKey) {
    const sig = join(b.dir, "SHA256SUMS.sig");
    return existsSync(sig) ? { sums, sig: readFileSync(sig) } : { sums };
  }
  if (!existsSync(signKey))
    throw new KilnError("PUSH_SUMS", `the signing key ${signKey} does not exist`);
  const list = join(scratch, "SHA256SUMS");
  await writeFile(list, sums);
  await exec("openssl", ["dgst", "-sha256", "-sign", signKey, "-out", `${list}.sig`, list], {
    hint: "--sign-key takes a PEM private key, e.g. addons.key.pem from `kiln keys addons`",
  });
  return { sums, sig: readFileSync(`${list}.sig`) };
}

/**
 * Push a build's disk to a registry as a containerDisk, then, when the build
 * has a SHA256SUMS or `signKey` signs one, the sums image under the tag
 * `sha256-HEX.sums` of the disk image's digest (so the sums are bound to
 * that image and never to a tag that may move).
 */
export async function pushBuild(
  b: BuildToPush,
  to: RegistryRef,
  o: { access: Access; signKey?: string },
): Promise<PushResult> {
  if (to.digest)
    throw new KilnError("PUSH_REF", `${refText(to)}: push to a tag; the registry gives the digest`);
  const tag = to.tag ?? b.version;
  const dest = { ...to, tag };
  const scratch = await mkdtemp(join(scratchDir(), "kiln-push-"));
  const drop = onCleanup(`push scratch ${scratch}`, () => removeTree(scratch));
  try {
    const layout = join(scratch, "layout");
    const file = basename(b.disk.path);
    const annotations = {
      "org.opencontainers.image.title": b.name,
      "org.opencontainers.image.version": b.version,
      "org.opencontainers.image.created": b.builtAt,
      "org.opencontainers.image.description": `${b.name} ${b.version}: a kiln-built ${b.distribution} disk (${b.disk.format}) as a KubeVirt containerDisk`,
      "dev.kiln.version": b.kiln,
      "dev.kiln.spec.name": b.name,
      "dev.kiln.spec.hash": b.specHash,
    };
    const facts: ImageFacts = {
      architecture: ociArchitecture(b.architecture),
      created: b.builtAt,
      labels: annotations,
      annotations,
      history: `kiln push (disk/${file})`,
    };
    const packing = step(`pack disk/${file} (${(b.disk.size / 2 ** 20).toFixed(0)} MiB)`);
    let shown = -1;
    const { manifest, layer } = await writeContainerDisk(
      layout,
      tag,
      b.disk,
      facts,
      (done, total) => {
        const pct = Math.floor((done / total) * 10) * 10;
        if (pct !== shown) packing.detail(`${pct}%`);
        shown = pct;
      },
    ).catch((err) => {
      packing.fail();
      throw err;
    });
    packing.done(manifest.digest);

    const pushing = step(`push ${refText(dest)}`);
    const digest = await pushLayout(layout, tag, dest, o.access, (l) => pushing.detail(l)).catch(
      (err) => {
        pushing.fail();
        throw err;
      },
    );
    pushing.done(digest);
    if (digest !== manifest.digest)
      log.warn(
        `the registry stored ${digest}, not kiln's ${manifest.digest}: it rewrote the manifest`,
      );

    let sums: PushResult["sums"] = null;
    const list = await sumsFor(b, scratch, o.signKey);
    if (list) {
      const sTag = sumsTag(digest);
      const sumsFacts = {
        ...facts,
        annotations: {
          ...annotations,
          "org.opencontainers.image.description": `SHA256SUMS${list.sig ? " and its signature" : ""} of ${refText(to)}@${digest}`,
        },
        history: "kiln push (SHA256SUMS)",
      };
      await writeSumsImage(layout, sTag, digest, list, sumsFacts);
      const sRef = { ...to, tag: sTag };
      const sDigest = await pushLayout(layout, sTag, sRef, o.access);
      log.info(
        `  ✓ SHA256SUMS${list.sig ? " + SHA256SUMS.sig" : " (unsigned)"} as ${refText(sRef)}`,
      );
      sums = { ref: refText(sRef), digest: sDigest, signed: !!list.sig };
    }
    return {
      ref: refText(dest),
      digest,
      layers: [layer],
      disk: { file, format: b.disk.format, sha256: b.disk.sha256 },
      sums,
    };
  } finally {
    await removeTree(scratch);
    drop();
  }
}
