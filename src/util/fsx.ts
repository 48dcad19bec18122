import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
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
