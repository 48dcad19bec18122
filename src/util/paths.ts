import { homedir } from "node:os";
import { join } from "node:path";

/** Where kiln keeps what survives between runs: apt downloads, root filesystems, probes. */
export function cacheDir(...parts: string[]): string {
  const base =
    process.env.KILN_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "kiln");
  return join(base, ...parts);
}
