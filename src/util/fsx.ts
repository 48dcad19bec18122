import { existsSync } from "node:fs";
import { lstat, lutimes, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { exec } from "./exec.js";

/**
 * Remove a scratch tree safely: first unmount anything a killed helper left
 * mounted inside it (deepest first), then delete without crossing into
 * another filesystem, so a stray bind mount of /dev or /proc can never be
 * emptied by mistake.
 */
export async function removeTree(dir: string): Promise<void> {
  const root = `${resolve(dir)}/`;
  const info = await readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  const mounts = info
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((m): m is string => !!m && `${m}/`.startsWith(root))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await exec("umount", ["-l", m]).catch(() => {});
  await exec("rm", ["-rf", "--one-file-system", dir]).catch(() => {});
}

/**
 * Unmount, waiting out a briefly busy filesystem (a container's last
 * processes may still be exiting) before falling back to a lazy unmount, so
 * that what lies below (a loop device, an overlay's lower layer) is free
 * when this returns in all but the stuck case.
 */
export async function unmount(path: string, waitMs = 5000): Promise<void> {
  const until = Date.now() + waitMs;
  for (;;) {
    try {
      await exec("umount", [path]);
      return;
    } catch (err) {
      if (/not mounted|no mount point/i.test(String(err))) return;
      if (Date.now() >= until) break;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  await exec("umount", ["-l", path]).catch(() => {});
}

/**
 * Detach a loop device and wait until the kernel has let go of it: a loop
 * still in use is only marked for auto-clear, which would leave it (and its
 * backing file) around after kiln has exited.
 */
export async function detachLoop(dev: string, waitMs = 5000): Promise<void> {
  await exec("losetup", ["-d", dev]).catch(() => {});
  const backing = `/sys/block/${dev.replace(/^\/dev\//, "")}/loop/backing_file`;
  const until = Date.now() + waitMs;
  while (existsSync(backing) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
}

/** Bytes used by a tree (what the root filesystem must hold). */
export async function treeBytes(dir: string): Promise<number> {
  const { stdout } = await exec("du", ["-s", "-x", "-B1", dir]);
  return Number(stdout.split("\t")[0]);
}

export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * Write a file so that a reader (or a crash) sees the old content or the
 * new, never half: a temporary file beside it, then a rename over it.
 */
export async function writeFileAtomic(
  file: string,
  data: string | Uint8Array,
  o: { mode?: number } = {},
): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  try {
    await writeFile(tmp, data, { mode: o.mode ?? 0o644 });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** A small JSON record, written atomically. */
export function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  return writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * No timestamp in `dir` later than `epoch` (SOURCE_DATE_EPOCH): what the
 * build wrote gets the build's fixed time; what came from packages keeps
 * dpkg's older one. Symlinks themselves, not their targets.
 */
export async function clampTimes(dir: string, epoch: number): Promise<void> {
  const visit = async (p: string): Promise<void> => {
    const st = await lstat(p);
    if (st.mtimeMs > epoch * 1000) await lutimes(p, epoch, epoch);
    if (st.isDirectory()) for (const n of await readdir(p)) await visit(join(p, n));
  };
  await visit(dir);
}
