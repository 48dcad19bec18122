import { existsSync, readdirSync, statSync } from "node:fs";
import { copyFile, mkdir, rename, rm, utimes } from "node:fs/promises";
import { dirname, join } from "node:path";
import { cacheDir } from "../util/paths.js";

/**
 * One file a build step made, kept under its content key so a later build
 * whose inputs hash the same copies it instead of making it again (a
 * one-file change to a spec must not redo its initrd). The newest `keep`
 * per kind stay: one per root a spec builds from, a few specs at a time.
 */
export class StepCache {
  constructor(
    private readonly kind: string,
    private readonly keep = 4,
  ) {}

  private path(key: string): string {
    return cacheDir(this.kind, key);
  }

  /** Copy the cached file to `dest` (dated `mtime` when given); false when there is none. */
  async restore(key: string, dest: string, mtime?: number): Promise<boolean> {
    const p = this.path(key);
    if (!existsSync(p)) return false;
    await copyFile(p, dest);
    const now = new Date();
    // Read counts as use: the prune below keeps what builds still restore.
    await utimes(p, now, now);
    if (mtime !== undefined) await utimes(dest, mtime, mtime);
    return true;
  }

  /** Keep `src` under `key`, whole or not at all (a partial name until renamed). */
  async save(key: string, src: string): Promise<void> {
    const p = this.path(key);
    await mkdir(dirname(p), { recursive: true });
    const partial = `${p}.partial-${process.pid}`;
    try {
      await copyFile(src, partial);
      await rename(partial, p);
    } finally {
      await rm(partial, { force: true });
    }
    const dir = dirname(p);
    const all = readdirSync(dir)
      .filter((f) => !f.includes(".partial-"))
      .map((f) => join(dir, f))
      .sort((x, y) => statSync(y).mtimeMs - statSync(x).mtimeMs);
    for (const old of all.slice(this.keep)) await rm(old, { force: true });
  }
}
