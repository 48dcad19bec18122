import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { age, cachedRootfs } from "../../distro/rootfs-cache.js";
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
  const r = await cachedRootfs({
    recipe: ctx.plan.recipe,
    distro: ctx.spec.distribution.id,
    key,
    refresh: ctx.refresh,
    scratch: join(ctx.work, "tmp"),
    onLine: (l) => ctx.detail(l),
  });
  ctx.facts.root = {
    bootstrappedAt: r.bootstrappedAt,
    suites: r.suites ?? "unknown (mirror unreachable)",
  };
  await mkdir(ctx.root, { recursive: true });
  await extractTree(r.tar, ctx.root);
  return r.bootstrapped ? "bootstrapped" : `cached, ${age(r.bootstrappedAt)} old`;
}
