import { mkdir, open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KilnError } from "../util/errors.js";
import { ExecError, exec } from "../util/exec.js";
import { removeTree } from "../util/fsx.js";
import { log, step } from "../util/log.js";
import { listTar } from "../util/tar-format.js";
import {
  ANNOTATION,
  extractMember,
  findDisk,
  readVerifiedImage,
  sumsTag,
} from "./containerdisk.js";
import { blobPath } from "./layout.js";
import { sumIn } from "./push.js";
import { type Access, NotInRegistry, pullToLayout, type RegistryRef, refText } from "./registry.js";

export interface FetchedDisk {
  /** The disk, extracted under the scratch directory with its name in the image (NAME.qcow2). */
  path: string;
  file: string;
  sha256: string;
  /** The image's manifest digest: `oci://REPO@DIGEST` fetches exactly this again. */
  digest: string;
  /** How far the image's SHA256SUMS vouched for the disk. */
  sums: "signature verified" | "signed, signature not checked" | "unsigned" | "none";
}

/** Largest SHA256SUMS / signature kiln reads out of a sums image. */
const SUMS_MAX = 1024 * 1024;
const SIG_MAX = 4096;

/**
 * Fetch a containerDisk from a registry into `scratch` and take its disk
 * out: every blob hashed against its digest, every layer judged before
 * anything is copied (see findDisk), the disk's sha256 compared with the
 * image's own record of it and with the image's SHA256SUMS when it has one;
 * with `verifyKey` the sums must exist and their signature verify.
 */
export async function fetchContainerDisk(
  ref: RegistryRef,
  scratch: string,
  o: { access: Access; verifyKey?: string; maxBytes: number },
): Promise<FetchedDisk> {
  const fetching = step(`fetch ${refText(ref)}`);
  const imageDir = join(scratch, "image");
  try {
    await pullToLayout(ref, imageDir, o.access, (l) => fetching.detail(l));
  } catch (err) {
    fetching.fail();
    if (err instanceof NotInRegistry)
      throw new KilnError(
        "PULL_REGISTRY",
        `${refText(ref)} is not in the registry: ${err.message}`,
      );
    throw err;
  }
  const image = await readVerifiedImage(imageDir).catch((err) => {
    fetching.fail();
    throw err;
  });
  if (ref.digest && image.digest !== ref.digest) {
    fetching.fail();
    throw new KilnError("OCI_DIGEST", `asked for ${ref.digest}, the registry sent ${image.digest}`);
  }
  fetching.done(`${image.digest}, every blob's digest checked`);

  const unpacking = step("take the disk out of its layer");
  let disk: Awaited<ReturnType<typeof findDisk>>;
  let sha256: string;
  const path = join(scratch, "disk");
  try {
    await mkdir(join(scratch, "layers"));
    disk = await findDisk(imageDir, image, join(scratch, "layers"), o.maxBytes);
    await mkdir(path);
    sha256 = await extractMember(disk, join(path, disk.file));
  } catch (err) {
    unpacking.fail();
    throw err;
  }
  const recorded = image.manifest.annotations?.[ANNOTATION.diskSha256];
  if (recorded && recorded !== sha256) {
    unpacking.fail();
    throw new KilnError(
      "OCI_SUMS",
      `disk/${disk.file} hashes to ${sha256}, the image's ${ANNOTATION.diskSha256} says ${recorded}`,
    );
  }
  unpacking.done(`disk/${disk.file}, sha256 ${sha256.slice(0, 16)}…`);
  // The layers are not needed any more; the store's copy is made from the extracted disk.
  await removeTree(imageDir);
  await removeTree(join(scratch, "layers"));

  const sums = await checkSums(ref, image.digest, disk.file, sha256, scratch, o);
  return { path: join(path, disk.file), file: disk.file, sha256, digest: image.digest, sums };
}

async function checkSums(
  ref: RegistryRef,
  digest: string,
  file: string,
  sha256: string,
  scratch: string,
  o: { access: Access; verifyKey?: string },
): Promise<FetchedDisk["sums"]> {
  const sRef: RegistryRef = { host: ref.host, repo: ref.repo, tag: sumsTag(digest) };
  const dir = join(scratch, "sums");
  try {
    await pullToLayout(sRef, dir, o.access);
  } catch (err) {
    if (!(err instanceof NotInRegistry)) throw err;
    if (o.verifyKey)
      throw new KilnError(
        "OCI_SUMS",
        `${refText(ref)} has no signed SHA256SUMS (${refText(sRef)})`,
        {
          hint: "push it with `kiln push --sign-key KEY`, or import without --verify-key",
        },
      );
    return "none";
  }
  const image = await readVerifiedImage(dir);
  const files: Record<string, Buffer> = {};
  for (const l of image.manifest.layers) {
    const tar = blobPath(dir, l.digest);
    for (const m of await listTar(tar, { maxMembers: 16 })) {
      const name = m.name.replace(/^\.?\//, "");
      if (m.type !== "0" || !["SHA256SUMS", "SHA256SUMS.sig"].includes(name)) continue;
      if (m.size > (name === "SHA256SUMS" ? SUMS_MAX : SIG_MAX))
        throw new KilnError("OCI_SUMS", `${refText(sRef)}: ${name} is ${m.size} bytes, too large`);
      const fh = await open(tar, "r");
      try {
        const b = Buffer.alloc(m.size);
        await fh.read(b, 0, m.size, m.offset);
        files[name] = b;
      } finally {
        await fh.close();
      }
    }
  }
  const list = files.SHA256SUMS;
  if (!list) throw new KilnError("OCI_SUMS", `${refText(sRef)} holds no SHA256SUMS`);
  const listed = sumIn(list.toString("utf8"), file);
  if (listed !== sha256)
    throw new KilnError(
      "OCI_SUMS",
      listed
        ? `${file} hashes to ${sha256}, the image's SHA256SUMS says ${listed}`
        : `the image's SHA256SUMS has no line for ${file}`,
    );
  const sig = files["SHA256SUMS.sig"];
  if (!o.verifyKey) {
    if (sig)
      log.warn("SHA256SUMS is signed, but no --verify-key was given: the signature is not checked");
    return sig ? "signed, signature not checked" : "unsigned";
  }
  if (!sig) throw new KilnError("OCI_SUMS", `${refText(sRef)}: SHA256SUMS is not signed`);
  await writeFile(join(dir, "SHA256SUMS"), list);
  await writeFile(join(dir, "SHA256SUMS.sig"), sig);
  try {
    await exec("openssl", [
      "dgst",
      "-sha256",
      "-verify",
      o.verifyKey,
      "-signature",
      join(dir, "SHA256SUMS.sig"),
      join(dir, "SHA256SUMS"),
    ]);
  } catch (err) {
    throw new KilnError(
      "OCI_SUMS",
      `the signature of ${refText(ref)}'s SHA256SUMS does not verify with ${o.verifyKey}${err instanceof ExecError ? `: ${(err.stdout.trim() || err.stderr.trim()).split("\n")[0]}` : ""}`,
    );
  }
  return "signature verified";
}
