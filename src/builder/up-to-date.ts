import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { type Manifest, manifestPath } from "../artifact/manifest.js";
import { type Lock, lockHash, lockPath, readLock } from "../distro/lock.js";
import { type SuiteState, suiteStates } from "../distro/release.js";
import type { Plan } from "../plan/plan.js";
import { cacheKey } from "../util/hash.js";

/** Where a build's root comes from, read once per build: its lock, or the suites as published now. */
export interface RootSource {
  lockFile: string;
  lock?: Lock;
  /** The suites' Release dates now (unlocked builds); null when the mirror did not answer. */
  suites?: SuiteState[] | null;
}

export async function rootSource(plan: Plan, specFile: string): Promise<RootSource> {
  const lockFile = lockPath(specFile);
  const lock = readLock(lockFile);
  if (lock) return { lockFile, lock };
  if (plan.base) return { lockFile };
  return { lockFile, suites: (await suiteStates(plan.recipe.sources)) ?? null };
}

/**
 * What a build's bytes follow from: kiln's own code and assets, the spec,
 * and the root it starts from. Undefined when that cannot be known
 * (customised imports; a mirror that does not answer): then the build runs.
 */
export function buildKey(
  plan: Plan,
  source: RootSource,
  extraOutputs: string[],
): string | undefined {
  if (plan.base) return undefined;
  const root = source.lock ? `lock:${lockHash(source.lock)}` : source.suites;
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
