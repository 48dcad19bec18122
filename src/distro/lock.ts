import { existsSync, readFileSync } from "node:fs";
import { z } from "zod";
import { KilnError } from "../util/errors.js";
import { sha256 } from "../util/hash.js";
import { debLine } from "./driver.js";
import type { RootfsRecipe } from "./mmdebstrap.js";
import type { SuiteState } from "./release.js";

/**
 * SPEC.lock: every package of a root filesystem with its exact version and
 * the sha256 of its .deb, and the time its builds are dated. A lock lives in
 * git beside its spec and is read as untrusted input: every field is checked.
 */
const lockedPackage = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9+.-]{0,99}$/),
  version: z.string().regex(/^[A-Za-z0-9.+~:-]{1,100}$/),
  arch: z.string().regex(/^[a-z0-9-]{1,20}$/),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z
    .number()
    .int()
    .positive()
    .max(2 ** 32),
  url: z
    .string()
    .max(2000)
    .regex(/^https?:\/\/[^\s'"\\]+\.deb$/, "an http(s) URL of a .deb"),
});

const lockSchema = z.strictObject({
  "kiln-lock": z.literal(1),
  distribution: z.strictObject({
    id: z.string(),
    release: z.string(),
    architecture: z.string(),
  }),
  /** The apt sources the packages came from (and the image keeps). */
  sources: z.array(z.string().max(500)),
  /** What the spec asked mmdebstrap to include when this was locked. */
  include: z.array(z.string().max(200)),
  sourceDateEpoch: z.number().int().positive(),
  suites: z.array(z.strictObject({ uri: z.string(), suite: z.string(), date: z.string() })),
  /** `apt-cache madison` of the kernel metapackage at lock time (the image keeps it). */
  kernelOffers: z.string().max(100_000).optional(),
  packages: z.array(lockedPackage).min(1).max(20_000),
});

export type Lock = z.infer<typeof lockSchema>;
export type LockedPackage = z.infer<typeof lockedPackage>;

export function lockPath(specFile: string): string {
  return `${specFile}.lock`;
}

export function readLock(file: string): Lock | undefined {
  if (!existsSync(file)) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new KilnError("LOCK_INVALID", `${file}: not JSON: ${(err as Error).message}`, {
      hint: "regenerate it with kiln lock --update",
    });
  }
  const r = lockSchema.safeParse(raw);
  if (!r.success) {
    const problems = r.error.issues
      .slice(0, 10)
      .map((i) => `  ${i.path.join(".") || "(top)"}: ${i.message}`);
    throw new KilnError("LOCK_INVALID", `${file} is not a kiln lock:\n${problems.join("\n")}`, {
      hint: "regenerate it with kiln lock --update",
    });
  }
  return r.data;
}

export function formatLock(lock: Lock): string {
  return `${JSON.stringify(lock, null, 2)}\n`;
}

/** The lock's identity: what a locked root filesystem is cached by. */
export function lockHash(lock: Lock): string {
  return sha256(formatLock(lock)).slice(0, 16);
}

/**
 * `apt-get download --print-uris` lines, `'URL' NAME_VERSION_ARCH.deb SIZE SHA256:HEX`,
 * into locked packages (the version and arch from the file name, where apt
 * writes an epoch's colon as %3a).
 */
export function parsePrintUris(text: string): LockedPackage[] {
  const out: LockedPackage[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const m = /^'([^']+)' (\S+)_(\S+)_(\S+)\.deb (\d+) SHA256:([0-9a-f]{64})$/.exec(line.trim());
    if (!m) throw new Error(`unexpected apt-get --print-uris line: ${line}`);
    out.push({
      name: m[2]!,
      version: decodeURIComponent(m[3]!),
      arch: m[4]!,
      sha256: m[6]!,
      size: Number(m[5]),
      url: m[1]!,
    });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name) || a.arch.localeCompare(b.arch));
}

export function makeLock(p: {
  distro: string;
  recipe: RootfsRecipe;
  suites: SuiteState[];
  packages: LockedPackage[];
  kernelOffers?: string;
}): Lock {
  return {
    "kiln-lock": 1,
    distribution: { id: p.distro, release: p.recipe.release, architecture: p.recipe.arch },
    sources: p.recipe.sources.map(debLine),
    include: [...p.recipe.packages],
    sourceDateEpoch: Math.floor(Math.max(...p.suites.map((s) => Date.parse(s.date))) / 1000),
    suites: p.suites,
    ...(p.kernelOffers ? { kernelOffers: p.kernelOffers } : {}),
    packages: p.packages,
  };
}

/** Why a lock no longer fits the spec's recipe (empty when it does). */
export function staleness(lock: Lock, distro: string, recipe: RootfsRecipe): string[] {
  const why: string[] = [];
  const d = lock.distribution;
  if (d.id !== distro || d.release !== recipe.release || d.architecture !== recipe.arch)
    why.push(
      `it is for ${d.id} ${d.release} ${d.architecture}, the spec builds ${distro} ${recipe.release} ${recipe.arch}`,
    );
  const sources = recipe.sources.map(debLine);
  if (JSON.stringify(sources) !== JSON.stringify(lock.sources))
    why.push(`its apt sources differ from the spec's (${sources.join("; ")})`);
  const locked = new Set(lock.include);
  const added = recipe.packages.filter((p) => !locked.has(p));
  const wanted = new Set(recipe.packages);
  const dropped = lock.include.filter((p) => !wanted.has(p));
  if (added.length) why.push(`the spec now includes ${added.join(", ")}`);
  if (dropped.length) why.push(`the spec no longer includes ${dropped.join(", ")}`);
  return why;
}

/** What `kiln lock --update` changed: `name: old → new`, added and removed packages. */
export function lockChanges(before: Lock | undefined, after: Lock): string[] {
  const key = (p: LockedPackage) => `${p.name}:${p.arch}`;
  const old = new Map((before?.packages ?? []).map((p) => [key(p), p]));
  const now = new Map(after.packages.map((p) => [key(p), p]));
  const out: string[] = [];
  for (const [k, p] of now) {
    const o = old.get(k);
    if (!o) out.push(`+ ${p.name} ${p.version}`);
    else if (o.version !== p.version) out.push(`  ${p.name}: ${o.version} → ${p.version}`);
    else if (o.sha256 !== p.sha256) out.push(`  ${p.name} ${p.version}: rebuilt (new sha256)`);
  }
  for (const [k, o] of old) if (!now.has(k)) out.push(`- ${o.name} ${o.version}`);
  return out;
}

/** apt's name for a .deb in /var/cache/apt/archives (and kiln's apt cache). */
export function debFileName(p: LockedPackage): string {
  return `${p.name}_${p.version.replace(/:/g, "%3a")}_${p.arch}.deb`;
}
