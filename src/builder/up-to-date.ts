import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { type Manifest, manifestPath } from "../artifact/manifest.js";
import { lockHash, lockPath, readLock } from "../distro/lock.js";
import { suiteStates } from "../distro/release.js";
import type { Plan } from "../plan/plan.js";
import { cacheKey } from "../util/hash.js";

/**
 * What a build's bytes follow from: kiln's own code and assets, the spec,
 * and the root it starts from (the lock, or the suites' Release dates as
 * the mirror publishes them now). Undefined when that cannot be known
 * (customised imports; a mirror that does not answer): then the build runs.
 */
export async function buildKey(
  plan: Plan,
  specFile: string,
  extraOutputs: string[],
): Promise<string | undefined> {
  if (plan.base) return undefined;
  const lock = readLock(lockPath(specFile));
  const root = lock ? `lock:${lockHash(lock)}` : await suiteStates(plan.recipe.sources);
  if (!root) return undefined;
  return cacheKey(codeHash(), plan.specHash, plan.steps, root, extraOutputs);
}

/**
 * The previous build in `outDir` when it was made from the same key and
 * every artifact is still there at its recorded size.
 */
export function upToDate(outDir: string, key: string): Manifest | undefined {
  const mf = manifestPath(outDir);
  if (!existsSync(mf)) return undefined;
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(mf, "utf8")) as Manifest;
  } catch {
    return undefined;
  }
  if (m.buildKey !== key) return undefined;
  for (const a of m.artifacts) {
    const p = join(outDir, a.path);
    if (!existsSync(p)) return undefined;
    const st = statSync(p);
    if (st.isFile() && st.size !== a.size) return undefined;
  }
  return m;
}

let code: string | undefined;

/** kiln's compiled code and the assets that go into images, by content. */
function codeHash(): string {
  if (code) return code;
  const h = createHash("sha256");
  const top = new URL("../..", import.meta.url).pathname;
  const visit = (dir: string) => {
    for (const n of readdirSync(dir).sort()) {
      const p = join(dir, n);
      const st = statSync(p);
      if (st.isDirectory()) visit(p);
      else if (st.isFile()) h.update(`${p.slice(top.length)}\0`).update(readFileSync(p));
    }
  };
  for (const d of [new URL("..", import.meta.url).pathname, join(top, "assets")])
    if (existsSync(d)) visit(d);
  code = h.digest("hex");
  return code;
}
