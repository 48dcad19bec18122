import { existsSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { RootfsRecipe } from "../../distro/mmdebstrap.js";
import { onCleanup } from "../../util/cleanup.js";
import { exec } from "../../util/exec.js";
import { cacheDir } from "../../util/paths.js";
import { extractTree } from "../../util/tar.js";
import type { BuildContext } from "../context.js";

/**
 * The root filesystem from mmdebstrap. The result is cached as a tarball
 * named by the recipe's hash, and the downloaded .debs are kept in an apt
 * cache shared by every build, so a warm build never bootstraps again.
 */
export async function rootfsStep(ctx: BuildContext): Promise<string> {
  const key = ctx.plan.steps.find((s) => s.id === "rootfs")!.key;
  const { tar, bootstrapped } = await cachedRootfs({
    recipe: ctx.plan.recipe,
    distro: ctx.spec.distribution.id,
    key,
    refresh: ctx.refresh,
    scratch: join(ctx.work, "tmp"),
    onLine: (l) => ctx.detail(l),
  });
  await mkdir(ctx.root, { recursive: true });
  await extractTree(tar, ctx.root);
  return bootstrapped ? "bootstrapped" : "cached";
}

export interface CachedRootfsOptions {
  recipe: RootfsRecipe;
  distro: string;
  /** Content hash of the recipe: the cache entry's name. */
  key: string;
  refresh: boolean;
  /** mmdebstrap's scratch space; the caller removes it. */
  scratch: string;
  onLine?: (line: string) => void;
}

/** The cached root filesystem tarball for a recipe, bootstrapping it first if needed. */
export async function cachedRootfs(
  o: CachedRootfsOptions,
): Promise<{ tar: string; bootstrapped: boolean }> {
  const tar = cacheDir("rootfs", `${o.key}.tar`);
  if (!o.refresh && existsSync(tar)) return { tar, bootstrapped: false };
  await bootstrap(o, tar);
  return { tar, bootstrapped: true };
}

async function bootstrap(o: CachedRootfsOptions, target: string): Promise<void> {
  const r = o.recipe;
  const apt = cacheDir("apt", `${o.distro}-${r.release}-${r.arch}`);
  await mkdir(apt, { recursive: true });
  await mkdir(cacheDir("rootfs"), { recursive: true });
  const partial = `${target}.partial-${process.pid}`;
  await mkdir(o.scratch, { recursive: true });
  const drop = onCleanup(`partial rootfs ${partial}`, () => rm(partial, { force: true }));
  try {
    await exec(
      "mmdebstrap",
      [
        "--mode=root",
        ...r.args,
        // The .debs survive in a shared cache; a second build downloads nothing.
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        `--setup-hook=sync-in ${apt} /var/cache/apt/archives/`,
        `--customize-hook=sync-out /var/cache/apt/archives ${apt}`,
        "--skip=download/empty",
        "--format=tar",
        r.release,
        partial,
        r.mirror,
      ],
      {
        // mmdebstrap's scratch chroot goes inside the caller's work directory,
        // so whatever an interrupted run leaves is removed with it.
        env: { TMPDIR: o.scratch },
        // mmdebstrap cleans up after SIGINT (what Ctrl-C sends it); give it time.
        stopSignal: "SIGINT",
        stopGraceMs: 60_000,
        ...(o.onLine ? { onLine: o.onLine } : {}),
        hint: `mmdebstrap could not build ${o.distro} ${r.release} from ${r.mirror}: check the release name, the mirror and the network`,
      },
    );
    await rename(partial, target);
  } finally {
    drop();
    await rm(partial, { force: true });
  }
}
