import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { listingDifferences, parseListing, type TreeDifference } from "./contents.js";
import { type Manifest, readManifest } from "./manifest.js";

export interface BuildDiff {
  same: boolean;
  /** Each artifact format both builds have, or either has, with its sha256 in each. */
  artifacts: { format: string; path: string; a?: string; b?: string; same: boolean }[];
  packages: string[];
  /** The root trees' differing paths, in path order (empty when a listing is missing). */
  files: TreeDifference[];
  /** Why the trees could not be compared, if they could not. */
  filesUnknown?: string;
  /** What each build says differs by design (generated passwords). */
  byDesign: string[];
}

/**
 * Two build outputs told apart: which artifacts differ, which packages, and
 * which files of the root tree (from each build's listing), first first.
 */
export async function diffBuilds(a: string, b: string): Promise<BuildDiff> {
  const [ma, mb] = await Promise.all([readManifest(a), readManifest(b)]);
  const packages = packageDiff(ma, mb);
  const la = await listing(a, ma);
  const lb = await listing(b, mb);
  const files = la && lb ? listingDifferences(la, lb) : [];
  // A directory output has no digest of its own: its listing stands for it.
  const artifacts = artifactDiff(ma, mb, !!la && !!lb && !files.length);
  const byDesign = [
    ...new Set([...(ma.reproducible?.differs ?? []), ...(mb.reproducible?.differs ?? [])]),
  ];
  return {
    same: artifacts.every((x) => x.same) && !packages.length && !files.length,
    artifacts,
    packages,
    files,
    ...(la && lb
      ? {}
      : { filesUnknown: "a build has no contents listing (built by an older kiln?)" }),
    byDesign,
  };
}

function artifactDiff(ma: Manifest, mb: Manifest, treesSame: boolean): BuildDiff["artifacts"] {
  const formats = [...new Set([...ma.artifacts, ...mb.artifacts].map((x) => x.format))].sort();
  return formats.map((format) => {
    const x = ma.artifacts.find((r) => r.format === format);
    const y = mb.artifacts.find((r) => r.format === format);
    // A directory has no single digest: the contents listing stands for it.
    const digest = (r: typeof x, m: Manifest) =>
      r ? r.sha256 || `listing:${m.contents ? "present" : "none"}` : undefined;
    const da = digest(x, ma);
    const db = digest(y, mb);
    return {
      format,
      path: (x ?? y)!.path,
      ...(da ? { a: da } : {}),
      ...(db ? { b: db } : {}),
      same: !!x && !!y && (x.sha256 || y.sha256 ? x.sha256 === y.sha256 : treesSame),
    };
  });
}

function packageDiff(ma: Manifest, mb: Manifest): string[] {
  const va = new Map(ma.packages.map((p) => [p.name, p.version]));
  const vb = new Map(mb.packages.map((p) => [p.name, p.version]));
  const out: string[] = [];
  for (const [n, v] of va) {
    const w = vb.get(n);
    if (w === undefined) out.push(`- ${n} ${v}`);
    else if (w !== v) out.push(`  ${n}: ${v} → ${w}`);
  }
  for (const [n, w] of vb) if (!va.has(n)) out.push(`+ ${n} ${w}`);
  return out.sort((x, y) => x.slice(2).localeCompare(y.slice(2)));
}

async function listing(dir: string, m: Manifest): Promise<Map<string, string> | undefined> {
  const f = m.contents ? join(dir, m.contents) : undefined;
  if (!f || !existsSync(f)) return undefined;
  return parseListing(await readFile(f, "utf8"));
}
