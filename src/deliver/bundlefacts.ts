import { readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";

/** What a boot script says of a netboot bundle: its build and the kernel arguments it was built with. */
export interface BundleFacts {
  /** "NAME VERSION" from the build's manifest.json, else the directory's name. */
  label: string;
  /** The bundle's cmdline file (console settings), or "". */
  cmdline: string;
}

/**
 * A bundle directory's facts, read from disk at most once per `ttlMs` per
 * directory. Every boot-script request needs them, and two stats and a read
 * per request were a tenth of the boot server's time at 5,000 boots/s; a
 * bundle rebuilt in place is seen within a second, which is sooner than any
 * machine could fetch the files the old script named. Bounded: the table is
 * emptied beyond 1,000 directories (the inventory names a handful).
 */
export class BundleFactsCache {
  private readonly byDir = new Map<string, { facts: BundleFacts; checked: number; key: string }>();

  constructor(
    private readonly ttlMs = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  get(dir: string): BundleFacts {
    const t = this.now();
    const hit = this.byDir.get(dir);
    if (hit && t - hit.checked < this.ttlMs) return hit.facts;
    const mf = join(dirname(dir), "manifest.json");
    const key = `${stamp(mf)}/${stamp(join(dir, "cmdline"))}`;
    if (hit?.key === key) {
      hit.checked = t;
      return hit.facts;
    }
    let label = dir.split("/").pop() ?? dir;
    try {
      const m = JSON.parse(readFileSync(mf, "utf8")) as { name?: unknown; version?: unknown };
      if (typeof m.name === "string" && typeof m.version === "string")
        label = `${m.name} ${m.version}`;
    } catch {}
    let cmdline = "";
    try {
      cmdline = readFileSync(join(dir, "cmdline"), "utf8").trim();
    } catch {}
    if (this.byDir.size >= 1000) this.byDir.clear();
    const facts = { label, cmdline };
    this.byDir.set(dir, { facts, checked: t, key });
    return facts;
  }
}

/** Size and modification time, or "none": what tells an edited file from the one read. */
function stamp(file: string): string {
  try {
    const st = statSync(file);
    return `${st.size}:${st.mtimeMs}`;
  } catch {
    return "none";
  }
}
