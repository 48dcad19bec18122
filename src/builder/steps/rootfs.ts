import { mkdir } from "node:fs/promises";
import { basename, join } from "node:path";
import { type Lock, lockHash, lockPath, readLock } from "../../distro/lock.js";
import { lockedRootfs } from "../../distro/locked-rootfs.js";
import { age, cachedRootfs } from "../../distro/rootfs-cache.js";
import { cacheKey } from "../../util/hash.js";
import { extractTree } from "../../util/tar.js";
import type { BuildContext } from "../context.js";

/**
 * The root filesystem from mmdebstrap. The result is cached as a tarball
 * named by the recipe's hash and the suites' Release dates, and the
 * downloaded .debs are kept in an apt cache shared by every build, so a warm
 * build never bootstraps again until a suite publishes something.
 */
export async function rootfsStep(ctx: BuildContext): Promise<string> {
  const key = ctx.plan.steps.find((s) => s.id === "rootfs")!.key;
  const lockFile = lockPath(ctx.loaded.files[0]!);
  const lock = readLock(lockFile);
  if (lock) return lockedStep(ctx, key, lock, lockFile);
  const r = await cachedRootfs({
    recipe: ctx.plan.recipe,
    distro: ctx.spec.distribution.id,
    key,
    refresh: ctx.refresh,
    scratch: join(ctx.work, "tmp"),
    onLine: (l) => ctx.detail(l),
  });
  // Everything after is derived from the root it starts from: ids from its
  // name (recipe + suites), times from the suites' newest Release.
  ctx.rootId = basename(r.tar);
  ctx.seed = cacheKey(ctx.plan.specHash, ctx.rootId);
  ctx.epoch = r.epoch;
  process.env.SOURCE_DATE_EPOCH = String(r.epoch);
  ctx.facts.root = {
    bootstrappedAt: r.bootstrappedAt,
    suites: r.suites ?? "unknown (mirror unreachable)",
  };
  await mkdir(ctx.root, { recursive: true });
  await extractTree(r.tar, ctx.root);
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
  ctx.rootId = basename(r.tar);
  ctx.seed = cacheKey(ctx.plan.specHash, ctx.rootId);
  ctx.epoch = lock.sourceDateEpoch;
  process.env.SOURCE_DATE_EPOCH = String(lock.sourceDateEpoch);
  ctx.facts.root = {
    bootstrappedAt: new Date(lock.sourceDateEpoch * 1000).toISOString(),
    suites: lock.suites,
    lock: { file: basename(lockFile), hash: lockHash(lock), packages: lock.packages.length },
  };
  await mkdir(ctx.root, { recursive: true });
  await extractTree(r.tar, ctx.root);
  return `${r.bootstrapped ? "installed" : "cached"} from ${basename(lockFile)} (${lock.packages.length} packages)`;
}
