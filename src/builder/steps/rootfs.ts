import { mkdir } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Manifest } from "../../artifact/manifest.js";
import { type Lock, lockHash } from "../../distro/lock.js";
import { lockedRootfs } from "../../distro/locked-rootfs.js";
import { age, cachedRootfs } from "../../distro/rootfs-cache.js";
import { cacheKey } from "../../util/hash.js";
import { extractTree } from "../../util/tar.js";
import type { BuildContext } from "../context.js";
import { deferredPattern, modulesToDefer } from "./modules.js";

/**
 * The root filesystem from mmdebstrap. The result is cached as a tarball
 * named by the recipe's hash and the suites' Release dates, and the
 * downloaded .debs are kept in an apt cache shared by every build, so a warm
 * build never bootstraps again until a suite publishes something.
 */
export async function rootfsStep(ctx: BuildContext): Promise<string> {
  const key = ctx.plan.steps.find((s) => s.id === "rootfs")!.key;
  const { lock, lockFile, suites } = ctx.source;
  if (lock) return lockedStep(ctx, key, lock, lockFile);
  const r = await cachedRootfs({
    recipe: ctx.plan.recipe,
    distro: ctx.spec.distribution.id,
    key,
    suites,
    refresh: ctx.refresh,
    scratch: join(ctx.work, "tmp"),
    onLine: (l) => ctx.detail(l),
  });
  await startFrom(ctx, r.tar, r.epoch, {
    bootstrappedAt: r.bootstrappedAt,
    suites: r.suites ?? "unknown (mirror unreachable)",
  });
  return r.bootstrapped ? "bootstrapped" : `cached, ${age(r.bootstrappedAt)} old`;
}

/** SPEC.lock beside the spec: the root it names, dated as it says. */
async function lockedStep(ctx: BuildContext, key: string, lock: Lock, lockFile: string) {
  const r = await lockedRootfs({
    recipe: ctx.plan.recipe,
    distro: ctx.spec.distribution.id,
    key,
    lock,
    lockFile,
    refresh: ctx.refresh,
    scratch: join(ctx.work, "tmp"),
    onLine: (l) => ctx.detail(l),
  });
  await startFrom(ctx, r.tar, lock.sourceDateEpoch, {
    bootstrappedAt: new Date(lock.sourceDateEpoch * 1000).toISOString(),
    suites: lock.suites,
    lock: { file: basename(lockFile), hash: lockHash(lock), packages: lock.packages.length },
  });
  return `${r.bootstrapped ? "installed" : "cached"} from ${basename(lockFile)} (${lock.packages.length} packages)`;
}

/**
 * Unpack the root and fix what everything after derives from it: ids from
 * its cache name (recipe + suites or lock), times from its epoch, which every
 * tool the build runs sees as SOURCE_DATE_EPOCH.
 */
async function startFrom(
  ctx: BuildContext,
  tar: string,
  epoch: number,
  root: NonNullable<Manifest["root"]>,
): Promise<void> {
  ctx.rootId = basename(tar);
  ctx.seed = cacheKey(ctx.plan.specHash, ctx.rootId);
  ctx.epoch = epoch;
  process.env.SOURCE_DATE_EPOCH = String(epoch);
  ctx.facts.root = root;
  await mkdir(ctx.root, { recursive: true });
  const deferred = await modulesToDefer(ctx, tar);
  await extractTree(tar, ctx.root, {}, deferred ? { exclude: [deferredPattern(deferred)] } : {});
  if (deferred) ctx.deferredModules = deferred;
}
