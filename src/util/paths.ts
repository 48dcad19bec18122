import { existsSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

/** Where kiln keeps what survives between runs: apt downloads, root filesystems, probes. */
export function cacheDir(...parts: string[]): string {
  const base =
    process.env.KILN_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "kiln");
  return join(base, ...parts);
}

/**
 * The local image store: one directory per image and tag, holding the root
 * filesystem and a small record. Root's store is /var/lib/kiln (like
 * /var/lib/docker); KILN_STORE moves it.
 */
export function storeDir(...parts: string[]): string {
  const base =
    process.env.KILN_STORE ??
    (process.getuid?.() === 0
      ? "/var/lib/kiln"
      : join(process.env.XDG_DATA_HOME ?? join(homedir(), ".local/share"), "kiln"));
  return join(base, ...parts);
}

/**
 * Where throw-away disk copies go: KILN_SCRATCH, else /var/tmp, which is on
 * disk where /tmp may be a RAM-backed tmpfs too small for a disk image.
 */
export function scratchDir(): string {
  return process.env.KILN_SCRATCH ?? (existsSync("/var/tmp") ? "/var/tmp" : tmpdir());
}
