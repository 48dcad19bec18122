import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import { afterAll, expect } from "vitest";

// Runs before each integration file, in that file's own process. Two files
// run at once (the machine has two cores and a TCG boot uses one), so each
// gets its own temporary directory, scratch directory for disk copies and
// fleet database, and a marker in its environment that every process it
// starts inherits: a file checks for leftovers of its own, never of the
// file running beside it (see `ours` in helpers.ts).
const file = basename(expect.getState().testPath ?? "unknown").replace(/\.test\.ts$/, "");
const base = process.env.KILN_IT_BASE ?? "/var/tmp";
const dir = join(base, `kiln-it-${file}-${process.pid}`);
mkdirSync(dir, { recursive: true });
process.env.TMPDIR = dir;
process.env.KILN_SCRATCH = dir;
process.env.KILN_DB = join(dir, "machines.sqlite");
process.env.KILN_IT_FILE = `${file}-${process.pid}`;

afterAll(() => {
  // Never recurse into something still mounted under it: say so instead.
  if (readFileSync("/proc/self/mountinfo", "utf8").includes(dir))
    throw new Error(`${dir} still has something mounted under it`);
  rmSync(dir, { recursive: true, force: true });
});
