import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, open, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { readMd10 } from "../image/mdraid.js";
import { loopPartition, rootPartition } from "../image/partitions.js";
import { acquire } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { detachLoop, unmount } from "../util/fsx.js";
import { scratchDir } from "../util/paths.js";
import { extractTree } from "../util/tar.js";

/** A file to place into a throw-away boot (never into the artifact). */
export interface Injected {
  path: string;
  content?: string;
  mode?: number;
  /** Make `path` a symlink to this target instead. */
  linkTo?: string;
}

export interface Ephemeral {
  path: string;
  dispose(): Promise<void>;
}

/** Write injected files under `dir` as they would be under `/`. */
async function writeTree(dir: string, inject: Injected[]): Promise<void> {
  for (const f of inject) {
    const dest = join(dir, f.path);
    await mkdir(dirname(dest), { recursive: true });
    if (f.linkTo) await symlink(f.linkTo, dest);
    else {
      await writeFile(dest, f.content ?? "");
      await chmod(dest, f.mode ?? 0o644);
    }
  }
}

/**
 * An initrd that is `initrd` followed by a newc archive of the injected files
 * under /kiln-inject, which kiln's netboot and ISO initrds copy into the
 * system they boot. The kernel unpacks concatenated archives in turn, each
 * compressed or not, so the build's initrd is used as it is.
 */
export async function initrdWith(initrd: string, inject: Injected[], dir: string): Promise<string> {
  const tree = join(dir, "inject-tree");
  await writeTree(join(tree, "kiln-inject"), inject);
  const extra = join(dir, "inject.cpio");
  await exec("sh", [
    "-c",
    'cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc >"$2"',
    "sh",
    tree,
    extra,
  ]);
  const out = join(dir, "initrd-test.img");
  const first = await readFile(initrd);
  // Each archive starts on a 4-byte boundary; zeros between them are skipped.
  const pad = Buffer.alloc((4 - (first.length % 4)) % 4);
  await writeFile(out, Buffer.concat([first, pad, await readFile(extra)]));
  await rm(tree, { recursive: true, force: true });
  return out;
}

/**
 * A writable view of a root filesystem directory: an overlay whose upper
 * layer is thrown away. Injected files go into the upper layer, so the
 * directory itself never changes.
 */
export async function overlayDir(
  lower: string,
  inject: Injected[] = [],
  /** Keep the layers in this directory (a kept container): dispose then only unmounts. */
  keepIn?: string,
): Promise<Ephemeral> {
  const base = keepIn ?? (await mkdtemp(join(tmpdir(), "kiln-overlay-")));
  const upper = join(base, "upper");
  const work = join(base, "work");
  const merged = join(base, "merged");
  await Promise.all([upper, work, merged].map((d) => mkdir(d, { recursive: true })));
  await writeTree(upper, inject);
  let mounted = false;
  const undo = async () => {
    if (mounted) await unmount(merged);
    mounted = false;
    if (!keepIn) await rm(base, { recursive: true, force: true });
  };
  const { dispose } = await acquire(`overlay ${merged}`, undo, async () => {
    await exec("mount", [
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${lower},upperdir=${upper},workdir=${work}`,
      merged,
    ]);
    mounted = true;
  });
  return { path: merged, dispose };
}

/**
 * A throw-away raw copy of a disk image with files injected into its root
 * filesystem by debugfs: no mount, no loop device, and the artifact itself
 * untouched. qcow2 images are converted on the way.
 */
export async function diskCopy(image: string, inject: Injected[] = []): Promise<Ephemeral> {
  if (!existsSync(image)) throw new KilnError("VM_NO_IMAGE", `${image} does not exist`);
  return scratchDisk("disk copy", "kiln-disk-", async (copy, base) => {
    await rawCopy(image, copy);
    if (!inject.length) return;
    const root = await rootPartition(copy);
    const fs = `${copy}?offset=${root.offset}`;
    // A disk from a machine that was switched off has a journal to replay; debugfs
    // writes around it and the kernel's replay at boot would undo what was injected.
    // (e2fsck replays it only on a device: it reopens by name, which loses ?offset=.)
    const features = await exec("debugfs", ["-R", "features", fs]);
    if (/\bneeds_recovery\b/.test(features.stdout)) {
      const dev = await loopPartition(copy, root);
      try {
        await exec("e2fsck", ["-E", "journal_only", "-y", dev], { okCodes: [0, 1] });
      } finally {
        await detachLoop(dev);
      }
    }
    const cmds: string[] = [];
    for (const [i, f] of inject.entries()) {
      for (const d of parents(f.path)) cmds.push(`mkdir ${d}`);
      if (f.linkTo) {
        cmds.push(`symlink ${f.path} ${f.linkTo}`);
      } else {
        const src = join(base, `inject-${i}`);
        await writeFile(src, f.content ?? "");
        cmds.push(
          `write ${src} ${f.path}`,
          `sif ${f.path} mode 0${(0o100000 | (f.mode ?? 0o644)).toString(8)}`,
        );
      }
    }
    await writeFile(join(base, "debugfs.cmds"), `${cmds.join("\n")}\n`);
    await exec("debugfs", ["-w", "-f", join(base, "debugfs.cmds"), fs]);
  });
}

/**
 * Make the root filesystem of mirror member `to` the same bytes as that of
 * `from` (both raw copies of one build's disks, `from` with files injected):
 * an md mirror must hold the same data on every member, or reads would
 * depend on the member they hit. Only the array's data is compared, chunk
 * by chunk, and only differing chunks written, so the copy stays sparse.
 */
export async function mirrorRootInto(from: string, to: string): Promise<void> {
  const [a, b] = [await rootPartition(from), await rootPartition(to)];
  const data = (await readMd10(from, a.offset, a.size * 512)).dataBytes;
  const [src, dst] = [await open(from, "r"), await open(to, "r+")];
  try {
    const CHUNK = 1024 * 1024;
    const x = Buffer.alloc(CHUNK);
    const y = Buffer.alloc(CHUNK);
    for (let at = 0; at < data; at += CHUNK) {
      const n = Math.min(CHUNK, data - at);
      await src.read(x, 0, n, a.offset + at);
      await dst.read(y, 0, n, b.offset + at);
      if (!x.subarray(0, n).equals(y.subarray(0, n))) await dst.write(x, 0, n, b.offset + at);
    }
  } finally {
    await src.close();
    await dst.close();
  }
}

/** A throw-away blank disk (a replacement for a mirror's member) of `bytes`. */
export async function blankDisk(bytes: number): Promise<Ephemeral> {
  return scratchDisk("blank disk", "kiln-blank-", async (path) => {
    const fh = await open(path, "w");
    await fh.truncate(bytes);
    await fh.close();
  });
}

/** A disk file in its own scratch directory, removed on dispose, on failure and on a signal. */
async function scratchDisk(
  what: string,
  prefix: string,
  make: (path: string, dir: string) => Promise<void>,
): Promise<Ephemeral> {
  const base = await mkdtemp(join(scratchDir(), prefix));
  const path = join(base, "disk.raw");
  const { dispose } = await acquire(
    `${what} ${base}`,
    () => rm(base, { recursive: true, force: true }),
    () => make(path, base),
  );
  return { path, dispose };
}
/** Disk image formats kiln boots from a raw copy, by file name (qemu-img's names). */
const FORMATS: [RegExp, string][] = [
  [/\.qcow2$/, "qcow2"],
  [/\.vmdk$/, "vmdk"],
  [/\.vhdx$/, "vhdx"],
  [/\.vhd$/, "vpc"],
  [/\.vdi$/, "vdi"],
];

/** Is this a disk image kiln can boot (raw, a VM format, or a Compute Engine tar.gz)? */
export function isDiskImage(file: string): boolean {
  return /\.(raw|img)$|\.gce\.tar\.gz$/.test(file) || FORMATS.some(([re]) => re.test(file));
}

/**
 * A sparse raw copy of a disk image in any format kiln writes: VM formats
 * through qemu-img (the format named, never probed), a Compute Engine
 * tar.gz unpacked (its disk.raw).
 */
async function rawCopy(image: string, copy: string): Promise<void> {
  const format = FORMATS.find(([re]) => re.test(image))?.[1];
  if (format) {
    await exec("qemu-img", ["convert", "-f", format, "-O", "raw", image, copy]);
  } else if (image.endsWith(".tar.gz")) {
    // diskCopy's copy is called disk.raw, as the archive's one disk is.
    await exec("tar", ["-xzf", image, "-C", dirname(copy), "disk.raw"]);
  } else {
    await exec("cp", ["--sparse=always", image, copy]);
  }
}

function parents(path: string): string[] {
  const parts = path.split("/").filter(Boolean);
  return parts.slice(0, -1).map((_, i) => `/${parts.slice(0, i + 1).join("/")}`);
}

/**
 * A disk image's root filesystem as a directory, for nspawn: the root
 * partition on a read-only loop device limited to its extent (no partition
 * nodes are needed, which hosts without udev lack), mounted read-only, with
 * a throw-away overlay on top. qcow2 images are converted to a raw copy first.
 */
export async function diskRootDir(image: string, inject: Injected[] = []): Promise<Ephemeral> {
  const copy = /\.(raw|img)$/.test(image) ? undefined : await diskCopy(image);
  const raw = copy?.path ?? image;
  const part = await rootPartition(raw);
  const base = await mkdtemp(join(tmpdir(), "kiln-diskroot-"));
  const lower = join(base, "root");
  let loop: string | undefined;
  let mounted = false;
  let overlay: Ephemeral | undefined;
  const undo = async () => {
    await overlay?.dispose();
    if (mounted) await unmount(lower);
    mounted = false;
    if (loop) await detachLoop(loop);
    loop = undefined;
    await rm(base, { recursive: true, force: true });
    await copy?.dispose();
  };
  const { value, dispose } = await acquire(`disk root of ${image}`, undo, async () => {
    await mkdir(lower);
    loop = await loopPartition(raw, part, { readOnly: true });
    await exec("mount", ["-o", "ro", loop, lower]);
    mounted = true;
    overlay = await overlayDir(lower, inject);
    return overlay.path;
  });
  return { path: value, dispose };
}

/** A root filesystem tarball unpacked into a scratch directory that is removed on dispose. */
export async function unpackTar(tar: string): Promise<Ephemeral> {
  const dir = await mkdtemp(join(tmpdir(), "kiln-unpack-"));
  const { dispose } = await acquire(
    `unpacked ${tar}`,
    () => rm(dir, { recursive: true, force: true }),
    async () => {
      await extractTree(tar, dir);
    },
  );
  return { path: dir, dispose };
}
