import { existsSync } from "node:fs";
import { lchown, lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import { KilnError } from "../util/errors.js";

export interface Owner {
  uid: number;
  gid: number;
}

/**
 * The user behind `sudo kiln build` (SUDO_UID/SUDO_GID), who should own
 * the outputs in their checkout, as mkosi does. Undefined when not run by
 * root through sudo, or when sudo was run by root itself.
 */
export function sudoOwner(env: NodeJS.ProcessEnv = process.env): Owner | undefined {
  if (process.getuid?.() !== 0 || env.SUDO_UID === undefined) return undefined;
  const id = (name: "SUDO_UID" | "SUDO_GID") => {
    const v = env[name] ?? "";
    if (!/^\d{1,10}$/.test(v) || Number(v) > 0xfffffffe)
      throw new KilnError("BUILD_SUDO_IDS", `${name}=${v} is not a user or group id`, {
        hint: "unset SUDO_UID and SUDO_GID, or set them to numbers",
      });
    return Number(v);
  };
  const owner = { uid: id("SUDO_UID"), gid: env.SUDO_GID === undefined ? 0 : id("SUDO_GID") };
  return owner.uid === 0 ? undefined : owner;
}

/**
 * Hand an output directory (and the directories made for it) to `owner`.
 * A root filesystem tree keeps its owners: they are its content, and a
 * system whose files belong to the builder's user would not work.
 */
export async function handOver(
  outDir: string,
  owner: Owner,
  o: { keep: string[]; madeParents: string[] },
): Promise<void> {
  const keep = new Set(o.keep.map((p) => join(outDir, p)));
  const walk = async (path: string): Promise<void> => {
    if (keep.has(path)) return;
    await lchown(path, owner.uid, owner.gid);
    if ((await lstat(path)).isDirectory())
      for (const e of await readdir(path)) await walk(join(path, e));
  };
  await walk(outDir);
  for (const d of o.madeParents) if (existsSync(d)) await lchown(d, owner.uid, owner.gid);
}
