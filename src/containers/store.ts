import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rename, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { hostArch } from "../util/binfmt.js";
import { KilnError } from "../util/errors.js";
import { removeTree } from "../util/fsx.js";
import { storeDir } from "../util/paths.js";

export interface ImageRef {
  name: string;
  tag: string;
  /** The Debian architecture when it is not the host's (`--platform linux/arm64`). */
  arch?: string;
}

export interface ImageRecord extends ImageRef {
  /** Where it came from: "mmdebstrap debian bookworm", "docker://…", a build. */
  source: string;
  created: string;
  bytes: number;
  /** Set for an image of another architecture than the host's; it runs through qemu-user. */
  arch?: string;
  /** From an OCI image's config: what `kiln run` uses when not told otherwise. */
  config?: { cmd?: string[]; env?: string[]; workdir?: string };
}

/** "debian:bookworm", "debian" (tag latest), "127.0.0.1:5000/team/app:1.0". */
export function parseRef(text: string): ImageRef {
  const slash = text.lastIndexOf("/");
  const colon = text.lastIndexOf(":");
  const [name, tag] =
    colon > slash ? [text.slice(0, colon), text.slice(colon + 1)] : [text, "latest"];
  if (!/^[a-z0-9][a-z0-9._/:-]*$/.test(name) || !/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/.test(tag))
    throw new KilnError("IMAGE_REF", `invalid reference format: ${text}`, {
      hint: "use NAME[:TAG], e.g. debian:bookworm",
      exitCode: 125,
    });
  return { name, tag };
}

export const refText = (r: ImageRef) => `${r.name}:${r.tag}`;

/** "linux/arm64" (docker's --platform) → "arm64"; the host's own architecture → undefined. */
export function parsePlatform(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const m = /^linux\/(amd64|arm64)(?:\/v8)?$/.exec(text);
  if (!m)
    throw new KilnError("IMAGE_REF", `unsupported platform ${text}`, {
      hint: "use linux/amd64 or linux/arm64",
      exitCode: 125,
    });
  return m[1] === hostArch() ? undefined : m[1];
}

/** An image of another architecture is stored beside the host's one of the same tag, never over it. */
function imageDir(r: ImageRef): string {
  const tag = r.arch && r.arch !== hostArch() ? `${r.tag}@${r.arch}` : r.tag;
  return storeDir("images", encodeURIComponent(r.name), encodeURIComponent(tag));
}

export function imageRootfs(r: ImageRef): string {
  return join(imageDir(r), "rootfs");
}

export function findImage(r: ImageRef): ImageRecord | undefined {
  const f = join(imageDir(r), "image.json");
  if (!existsSync(f)) return undefined;
  return JSON.parse(readFileSync(f, "utf8")) as ImageRecord;
}

export function listImages(): ImageRecord[] {
  const root = storeDir("images");
  if (!existsSync(root)) return [];
  const out: ImageRecord[] = [];
  for (const n of readdirSync(root))
    for (const t of readdirSync(join(root, n))) {
      const [tag, arch] = decodeURIComponent(t).split("@");
      const rec = findImage({ name: decodeURIComponent(n), tag: tag!, ...(arch ? { arch } : {}) });
      if (rec) out.push(rec);
    }
  return out.sort((a, b) => refText(a).localeCompare(refText(b)));
}

/**
 * Put a root filesystem into the store under `ref`: `fill` writes it into a
 * scratch directory inside the store, which replaces the old image by a
 * rename only when complete, so a failed or interrupted pull changes nothing.
 */
export async function addImage(
  ref: ImageRef,
  source: string,
  fill: (rootfs: string) => Promise<number>,
  config?: ImageRecord["config"],
): Promise<ImageRecord> {
  const dir = imageDir(ref);
  await mkdir(storeDir("tmp"), { recursive: true });
  const scratch = await mkdtemp(join(storeDir("tmp"), "pull-"));
  try {
    await mkdir(join(scratch, "rootfs"));
    const bytes = await fill(join(scratch, "rootfs"));
    const rec: ImageRecord = {
      name: ref.name,
      tag: ref.tag,
      ...(ref.arch && ref.arch !== hostArch() ? { arch: ref.arch } : {}),
      source,
      created: new Date().toISOString(),
      bytes,
      ...(config && Object.keys(config).length ? { config } : {}),
    };
    await writeFile(join(scratch, "image.json"), `${JSON.stringify(rec, null, 2)}\n`);
    await mkdir(join(dir, ".."), { recursive: true });
    if (existsSync(dir)) {
      const old = `${scratch}.old`;
      await rename(dir, old);
      await rename(scratch, dir);
      await removeTree(old);
    } else await rename(scratch, dir);
    return rec;
  } finally {
    if (existsSync(scratch)) await removeTree(scratch);
  }
}

export async function removeImage(ref: ImageRef): Promise<void> {
  if (!findImage(ref))
    throw new KilnError("IMAGE_MISSING", `No such image: ${refText(ref)}`, { exitCode: 1 });
  await removeTree(imageDir(ref));
  // The name's directory goes when its last tag does.
  await rmdir(join(imageDir(ref), "..")).catch(() => {});
}
