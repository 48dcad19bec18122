import { existsSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { onCleanup } from "../../util/cleanup.js";
import { exec } from "../../util/exec.js";
import { cacheDir } from "../../util/paths.js";
import type { BuildContext } from "../context.js";

/**
 * The root filesystem from mmdebstrap. The result is cached as a tarball
 * named by the recipe's hash, and the downloaded .debs are kept in an apt
 * cache shared by every build, so a warm build never bootstraps again.
 */
export async function rootfsStep(ctx: BuildContext): Promise<string> {
  const key = ctx.plan.steps.find((s) => s.id === "rootfs")!.key;
  const cached = cacheDir("rootfs", `${key}.tar`);
  let note = "cached";
  if (ctx.refresh || !existsSync(cached)) {
    await bootstrap(ctx, cached);
    note = "bootstrapped";
  }
  await mkdir(ctx.root, { recursive: true });
  await exec("tar", [
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "-C",
    ctx.root,
    "-xf",
    cached,
  ]);
  return note;
}

async function bootstrap(ctx: BuildContext, target: string): Promise<void> {
  const r = ctx.plan.recipe;
  const apt = cacheDir("apt", `${ctx.spec.distribution.id}-${r.release}-${r.arch}`);
  await mkdir(apt, { recursive: true });
  await mkdir(cacheDir("rootfs"), { recursive: true });
  const partial = `${target}.partial-${process.pid}`;
  const scratch = join(ctx.work, "tmp");
  await mkdir(scratch, { recursive: true });
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
        // mmdebstrap's scratch chroot goes inside kiln's work directory, so
        // whatever an interrupted run leaves is removed with it.
        env: { TMPDIR: scratch },
        // mmdebstrap cleans up after SIGINT (what Ctrl-C sends it); give it time.
        stopSignal: "SIGINT",
        stopGraceMs: 60_000,
        onLine: (l) => ctx.detail(l),
        hint: `mmdebstrap could not build ${ctx.spec.distribution.id} ${r.release} from ${r.mirror}: check the release name, the mirror and the network`,
      },
    );
    await rename(partial, target);
  } finally {
    drop();
    await rm(partial, { force: true });
  }
}
