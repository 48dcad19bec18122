import { existsSync } from "node:fs";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { distroDriver, knownDistro } from "../distro/driver.js";
import { cachedRootfs } from "../distro/rootfs-cache.js";
import { treeBytes } from "../util/fsx.js";
import { extractTree } from "../util/tar.js";
import "../distro/index.js";
import { specSchema } from "../config/schema.js";
import { rootfsKey } from "../plan/plan.js";
import { rootfsRecipe } from "../plan/recipe.js";
import { ensureBinfmt, hostArch } from "../util/binfmt.js";
import { KilnError } from "../util/errors.js";
import { removeTree } from "../util/fsx.js";
import { log } from "../util/log.js";
import { storeDir } from "../util/paths.js";
import { addImage, findImage, type ImageRecord, type ImageRef } from "./store.js";

/** Can `kiln pull` make this reference itself (a distribution kiln bootstraps)? */
export function pullable(ref: ImageRef): boolean {
  return knownDistro(ref.name);
}

/**
 * `kiln pull debian:bookworm`: the distribution's minimal base plus systemd
 * (so `kiln run --boot` works), bootstrapped with mmdebstrap through the same
 * content-addressed cache and apt cache as builds. `latest` is the driver's
 * first release.
 */
export async function pullDistro(
  ref: ImageRef,
  o: { force?: boolean; onLine?: (l: string) => void } = {},
): Promise<{ image: ImageRecord; fresh: boolean }> {
  if (!pullable(ref))
    throw new KilnError(
      "PULL_UNKNOWN",
      `pull access denied for ${ref.name}: kiln cannot build it`,
      {
        hint: "kiln pulls debian:RELEASE and ubuntu:RELEASE itself, and docker://… or oci:DIR:TAG images",
      },
    );
  const existing = findImage(ref);
  if (existing && !o.force) return { image: existing, fresh: false };
  const driver = distroDriver(ref.name);
  const release = ref.tag === "latest" ? driver.releases[0]! : ref.tag;
  const arch = ref.arch ?? hostArch();
  const spec = specSchema.parse({
    name: `${ref.name}-${release}`,
    distribution: { id: ref.name, release },
    architecture: arch,
  });
  // mmdebstrap runs the image's maintainer scripts: another architecture's go through qemu-user.
  for (const c of await ensureBinfmt(arch)) log.warn(`host: ${c}`);
  const recipe = rootfsRecipe(spec, { container: true });
  await mkdir(storeDir("tmp"), { recursive: true });
  const scratch = await mkdtemp(join(storeDir("tmp"), "mmdebstrap-"));
  try {
    const { tar } = await cachedRootfs({
      recipe,
      distro: ref.name,
      key: rootfsKey(recipe),
      refresh: !!o.force,
      scratch,
      ...(o.onLine ? { onLine: o.onLine } : {}),
    });
    const image = await addImage(ref, `mmdebstrap ${ref.name} ${release}`, async (rootfs) => {
      await extractTree(tar, rootfs);
      await ensureHosts(rootfs);
      return treeBytes(rootfs);
    });
    return { image, fresh: true };
  } finally {
    await removeTree(scratch);
  }
}

/** mmdebstrap (and many OCI images) leave no /etc/hosts; without one, "localhost" does not resolve. */
export async function ensureHosts(rootfs: string): Promise<void> {
  if (existsSync(join(rootfs, "etc/hosts")) || !existsSync(join(rootfs, "etc"))) return;
  await writeFile(
    join(rootfs, "etc/hosts"),
    "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
  );
}
