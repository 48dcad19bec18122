import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { CONTENTS_FILE, treeListingBeside } from "../artifact/contents.js";
import {
  type ArtifactRecord,
  type Manifest,
  manifestPath,
  readManifest,
} from "../artifact/manifest.js";
import { loadSpec } from "../config/load.js";
import { parseSize, type Spec, trimmed } from "../config/schema.js";
import { listPackages } from "../distro/packages.js";
import { type Plan, planBuild, type StepId } from "../plan/plan.js";
import { ensureBinfmt } from "../util/binfmt.js";
import { onCleanup } from "../util/cleanup.js";
import { type Credential, writeCredentials } from "../util/credentials.js";
import { KilnError } from "../util/errors.js";
import { clampTimes, mib, removeTree, treeBytes } from "../util/fsx.js";
import { sha256File } from "../util/hash.js";
import { log, step } from "../util/log.js";
import { KILN_VERSION } from "../util/version.js";
import type { BuildContext } from "./context.js";
import { baseStep, customisedDiskStep, customiseStep } from "./customise.js";
import { handOver, sudoOwner } from "./ownership.js";
import { portableStep, sysextStep } from "./steps/addons.js";
import { trimBootWork } from "./steps/boot-work.js";
import { cloudSteps } from "./steps/clouds.js";
import { configureStep, filesStep } from "./steps/configure.js";
import { diskStep } from "./steps/disk.js";
import { isoStep } from "./steps/iso.js";
import { kernelStep } from "./steps/kernel.js";
import { minimizeStep } from "./steps/minimize.js";
import { mirrorImages, mirrorsOf } from "./steps/mirror.js";
import { dropPackageManager } from "./steps/nano.js";
import { netbootStep } from "./steps/netboot.js";
import { ociStep } from "./steps/oci.js";
import { conversionSteps, directoryStep, tarStep } from "./steps/outputs.js";
import { rootfsStep } from "./steps/rootfs.js";
import { usersStep } from "./steps/users.js";
import { buildKey, rootSource, upToDate } from "./up-to-date.js";

export interface BuildOptions {
  outDir?: string;
  refresh?: boolean;
  /** Outputs wanted besides the spec's own (e.g. `kiln bundle` needs the root filesystem). */
  addOutputs?: Spec["outputs"];
}

export interface BuildResult {
  outDir: string;
  manifest: Manifest;
  credentials: Credential[];
  /** The output was already built from the same code, spec and root, and kept. */
  upToDate?: boolean;
}

/** A step; a string result is a short note for the progress line (or, for outputs, the artifact path). */
type StepFn = (ctx: BuildContext) => Promise<unknown>;

/**
 * What each step does, by id: one exhaustive map (a step the plan can name
 * but nothing implements is a compile error). The order is the plan's.
 * Customising an imported disk has its own base and customise steps and its
 * own way to the disk; the conversions are shared.
 */
const STEPS: Record<StepId, StepFn> = {
  base: baseStep,
  customise: customiseStep,
  rootfs: rootfsStep,
  configure: configureStep,
  users: async (ctx) => {
    await usersStep(ctx);
    await filesStep(ctx);
  },
  kernel: kernelStep,
  minimize: async (ctx) => {
    await minimizeStep(ctx);
    if (trimmed(ctx.spec)) {
      const cut = await trimBootWork(ctx);
      if (cut.length) log.debug(`boot work done at build time or ruled out: ${cut.join(", ")}`);
    }
    if (ctx.spec.profile === "nano") {
      ctx.detail("removing the package manager (nano profile)");
      const { removed, bytes, dead, unloaded } = await dropPackageManager(ctx);
      log.debug(`nano: removed ${removed.length} packages (${mib(bytes)}): ${removed.join(", ")}`);
      log.debug(
        `nano: PAM modules no pam.d file names, and libraries only they needed: ${unloaded.join(", ")}`,
      );
      if (dead.length)
        log.debug(`nano: scripts without their interpreter removed: ${dead.join(", ")}`);
    }
    // The tree is final now: nothing the build wrote is dated after the epoch.
    if (ctx.epoch !== undefined) await clampTimes(ctx.root, ctx.epoch);
    ctx.facts.contents = CONTENTS_FILE;
    const listed = treeListingBeside(ctx.root).then((text) =>
      writeFile(join(ctx.stage, CONTENTS_FILE), text),
    );
    listed.catch(() => {});
    ctx.rootReads.push(listed);
    ctx.facts.installedBytes = await treeBytes(ctx.root);
    ctx.facts.packages = await listPackages(ctx.root);
    checkInstalledLimit(ctx);
    return mib(ctx.facts.installedBytes);
  },
  tar: tarStep,
  oci: ociStep,
  portable: portableStep,
  sysext: sysextStep,
  disk: (ctx) => (ctx.plan.base ? customisedDiskStep(ctx) : diskStep(ctx)),
  iso: isoStep,
  ...conversionSteps,
  ...cloudSteps,
  netboot: netbootStep,
  directory: directoryStep,
  manifest: manifestStep,
};

export function planFor(
  specPath: string,
  addOutputs: Spec["outputs"] = [],
): { plan: Plan; loaded: ReturnType<typeof loadSpec> } {
  const loaded = loadSpec(specPath);
  for (const w of loaded.warnings)
    log.warn(`${w.loc.file}:${w.loc.line}:${w.loc.column}: warning: ${w.message}`);
  for (const o of addOutputs) if (!loaded.spec.outputs.includes(o)) loaded.spec.outputs.push(o);
  return { loaded, plan: planBuild(loaded.spec, loaded.canonical) };
}

/**
 * Plan, then apply. Everything happens in a work directory beside the
 * output; the finished output replaces the previous one with a rename, so an
 * error or Ctrl-C leaves the last good build untouched and nothing half-made.
 */
export async function build(specPath: string, opts: BuildOptions = {}): Promise<BuildResult> {
  const { loaded, plan } = planFor(specPath, opts.addOutputs);
  const spec = loaded.spec;
  const outDir = resolve(opts.outDir ?? join("out", spec.name));
  // Nothing changed since the build in outDir (same code, spec and root): keep it.
  const source = await rootSource(plan, loaded.files[0]!);
  const key = buildKey(plan, source, opts.addOutputs ?? []);
  const kept = key && !opts.refresh ? upToDate(outDir, key) : undefined;
  if (kept) {
    log.info(`  ✓ up to date: nothing changed since ${kept.builtAt} (--refresh rebuilds)`);
    return { outDir, manifest: kept, credentials: [], upToDate: true };
  }
  const owner = sudoOwner();
  const firstMade = await mkdir(dirname(outDir), { recursive: true });
  const work = await mkdtemp(join(dirname(outDir), `.${basename(outDir)}.kiln-work-`));
  // The same removal as the normal end: mmdebstrap stopped mid-setup can leave
  // /proc, /sys and /dev mounted in its chroot under work, which rm -r cannot remove.
  const dropCleanup = onCleanup(`build work directory ${work}`, () => removeTree(work));
  const ctx: BuildContext = {
    loaded,
    spec,
    plan,
    work,
    root: join(work, "root"),
    stage: join(work, "stage"),
    outDir,
    refresh: opts.refresh ?? false,
    credentials: [],
    artifacts: [],
    hashing: [],
    rootReads: [],
    facts: {},
    steps: [],
    seed: plan.specHash,
    source,
    ...(key ? { buildKey: key } : {}),
    detail: () => {},
  };
  // The rootfs step sets SOURCE_DATE_EPOCH for every tool the build runs; it is this build's only.
  const sourceDateEpoch = process.env.SOURCE_DATE_EPOCH;
  await mkdir(ctx.stage, { recursive: true });
  try {
    // Another architecture's maintainer scripts and hooks run through qemu-user; kiln says what it changed.
    const changed = await ensureBinfmt(spec.architecture);
    for (const c of changed) log.warn(`host: ${c}`);
    if (changed.length) ctx.facts.hostChanges = changed;
    for (const planned of plan.steps) {
      const id = planned.id;
      const fn = STEPS[id];
      const progress = step(planned.title);
      ctx.detail = (t) => progress.detail(t);
      let note: string | undefined;
      try {
        const r = await fn(ctx);
        // A path is an artifact's; a step made only for others (the disk of an ISO) has no note.
        if (typeof r === "string" && !r.startsWith(ctx.stage)) note = r;
        // Several paths: one artifact per disk of a mirrored root, numbered from 1.
        const paths = typeof r === "string" ? [r] : isPaths(r) ? r : [];
        if (paths.length && (spec.outputs as string[]).includes(id)) {
          for (const [i, p] of paths.entries())
            await recordArtifact(ctx, id, p, paths.length > 1 ? i + 1 : undefined);
          note = paths
            .map((_, i) => mib(ctx.artifacts[ctx.artifacts.length - paths.length + i]!.size))
            .join(" + ");
        }
      } catch (err) {
        progress.fail();
        throw err;
      }
      const seconds = progress.done(note);
      ctx.steps.push({ id, seconds: round(seconds), ...(note ? { note } : {}) });
    }
    await swapInto(ctx.stage, outDir, work);
    if (owner)
      await handOver(outDir, owner, {
        keep: ctx.artifacts.filter((a) => a.format === "directory").map((a) => a.path),
        madeParents: firstMade ? parentsFrom(firstMade, dirname(outDir)) : [],
      });
    return { outDir, manifest: await readManifest(outDir), credentials: ctx.credentials };
  } finally {
    if (sourceDateEpoch === undefined) delete process.env.SOURCE_DATE_EPOCH;
    else process.env.SOURCE_DATE_EPOCH = sourceDateEpoch;
    await removeTree(work);
    dropCleanup();
  }
}

/** The last step: limits on what was made, the credentials file, and manifest.json. */
async function manifestStep(ctx: BuildContext): Promise<void> {
  const { spec } = ctx;
  // The raw disk is staged for the steps made from it (ISO, conversions); it stays only as an output.
  if (!spec.outputs.includes("disk"))
    for (const raw of mirrorImages(ctx.stage, spec.name, mirrorsOf(spec)))
      await rm(raw, { force: true });
  checkCompressedLimit(ctx);
  await Promise.all([...ctx.hashing, ...ctx.rootReads]);
  if (ctx.credentials.length)
    await writeCredentials(join(ctx.stage, "credentials"), ctx.credentials);
  const manifest = makeManifest(ctx);
  await writeFile(manifestPath(ctx.stage), `${JSON.stringify(manifest, null, 2)}\n`);
}

async function recordArtifact(
  ctx: BuildContext,
  format: string,
  path: string,
  disk?: number,
): Promise<void> {
  const st = await stat(path);
  const isDir = st.isDirectory();
  const record: ArtifactRecord = {
    format,
    path: basename(path),
    size: isDir ? await treeBytes(path) : st.size,
    sha256: "",
    ...(disk ? { disk } : {}),
  };
  ctx.artifacts.push(record);
  // Later steps only read an artifact (a conversion, an ISO of the disk), so it can be hashed beside them.
  if (!isDir) {
    const hashed = sha256File(path).then((h) => {
      record.sha256 = h;
    });
    // Awaited by the manifest step; until then a failure must not count as unhandled.
    hashed.catch(() => {});
    ctx.hashing.push(hashed);
  }
}

function isPaths(r: unknown): r is string[] {
  return Array.isArray(r) && r.length > 0 && r.every((x) => typeof x === "string");
}

/** Replace the output directory in two renames; the old one is deleted only after. */
async function swapInto(stage: string, outDir: string, work: string): Promise<void> {
  const previous = join(work, "previous");
  if (existsSync(outDir)) await rename(outDir, previous);
  try {
    await rename(stage, outDir);
  } catch (err) {
    if (existsSync(previous)) await rename(previous, outDir);
    throw err;
  }
}

function makeManifest(ctx: BuildContext): Manifest {
  const { spec, plan } = ctx;
  const packages = ctx.facts.packages ?? [];
  return {
    kiln: KILN_VERSION,
    name: spec.name,
    version: spec.version,
    specHash: plan.specHash,
    distribution: {
      id: spec.distribution.id,
      release: spec.distribution.release,
      architecture: spec.architecture,
    },
    kernel: ctx.facts.kernelVersion,
    ...(ctx.facts.kernelPackage ? { kernelPackage: ctx.facts.kernelPackage } : {}),
    ...(ctx.facts.modules ? { modules: ctx.facts.modules } : {}),
    ...(ctx.facts.root ? { root: ctx.facts.root } : {}),
    ...(ctx.epoch !== undefined
      ? {
          reproducible: {
            sourceDateEpoch: ctx.epoch,
            seed: ctx.seed,
            differs: generatedPasswords(spec).map(
              (u) =>
                `${u}'s password hash in /etc/shadow and /etc/shadow- (a new password each build)`,
            ),
          },
        }
      : {}),
    ...(ctx.facts.contents ? { contents: ctx.facts.contents } : {}),
    ...(ctx.buildKey ? { buildKey: ctx.buildKey } : {}),
    packages: packages.map((p) => ({ name: p.name, version: p.version })),
    sizes: { installed: ctx.facts.installedBytes ?? 0 },
    artifacts: ctx.artifacts,
    ...(ctx.facts.disk ? { disk: ctx.facts.disk } : {}),
    steps: ctx.steps,
    ...(ctx.facts.hostChanges ? { hostChanges: ctx.facts.hostChanges } : {}),
    tests: spec.tests,
    builtAt: new Date().toISOString(),
  };
}

function generatedPasswords(spec: Spec): string[] {
  const users = spec.users.filter((u) => u.password === "generate").map((u) => u.name);
  return spec.root.password === "generate" ? ["root", ...users] : users;
}

function checkInstalledLimit(ctx: BuildContext): void {
  const limit = ctx.spec.limits.installed_size;
  const used = ctx.facts.installedBytes ?? 0;
  if (limit && used > parseSize(limit)) {
    throw new KilnError(
      "LIMIT_INSTALLED",
      `installed size ${mib(used)} exceeds limits.installed_size ${limit}\n${sizeReport(ctx)}`,
      {
        hint: "drop packages, or raise the limit",
      },
    );
  }
}

function checkCompressedLimit(ctx: BuildContext): void {
  const limit = ctx.spec.limits.compressed_size;
  if (!limit) return;
  for (const a of ctx.artifacts.filter((x) => x.format === "qcow2" || x.format === "tar")) {
    if (a.size > parseSize(limit)) {
      throw new KilnError(
        "LIMIT_COMPRESSED",
        `${a.path} is ${mib(a.size)}, over limits.compressed_size ${limit}\n${sizeReport(ctx)}`,
      );
    }
  }
}

function sizeReport(ctx: BuildContext): string {
  const pkgs = ctx.facts.packages ?? [];
  const top = [...pkgs].sort((a, b) => b.installedKiB - a.installedKiB).slice(0, 10);
  return [
    `${pkgs.length} packages; largest:`,
    ...top.map((p) => `  ${(p.installedKiB / 1024).toFixed(1).padStart(7)} MiB  ${p.name}`),
  ].join("\n");
}

/** The directories `mkdir -p` made, from the first one down to `last`. */
function parentsFrom(first: string, last: string): string[] {
  const out: string[] = [];
  for (let d = last; d.length >= first.length; d = dirname(d)) {
    out.push(d);
    if (d === first || d === dirname(d)) break;
  }
  return out;
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
