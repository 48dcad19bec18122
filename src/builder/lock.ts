import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  formatLock,
  type Lock,
  lockChanges,
  lockPath,
  makeLock,
  parsePrintUris,
  readLock,
} from "../distro/lock.js";
import { APT_OFFERS } from "../distro/mmdebstrap.js";
import { cachedRootfs, debsOf } from "../distro/rootfs-cache.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { writeFileAtomic } from "../util/fsx.js";
import { planFor } from "./build.js";

export interface LockResult {
  file: string;
  lock: Lock;
  /** `name: old → new`, `+ name version`, `- name version` against the lock it replaced. */
  changes: string[];
  replaced: boolean;
}

/**
 * Resolve a spec's packages against its mirrors as they are now and write
 * SPEC.lock: a bootstrap (or the cached root of today's suites) tells which
 * packages and versions apt chose, and the sha256 apt verified for each.
 */
export async function lockSpec(
  specPath: string,
  o: { update?: boolean; onLine?: (l: string) => void } = {},
): Promise<LockResult> {
  const { loaded, plan } = planFor(specPath);
  if (plan.base)
    throw new KilnError(
      "LOCK_STALE",
      `${specPath} customises ${plan.base}: there is no root to lock`,
    );
  const file = lockPath(loaded.files[0]!);
  const before = readLockQuiet(file);
  if (before.exists && !o.update)
    throw new KilnError("LOCK_EXISTS", `${file} exists`, {
      hint: "kiln lock --update SPEC re-resolves it and shows what changed",
    });
  const key = plan.steps.find((s) => s.id === "rootfs")!.key;
  const scratch = await mkdtemp(join(tmpdir(), "kiln-lock-"));
  try {
    const r = await cachedRootfs({
      recipe: plan.recipe,
      distro: loaded.spec.distribution.id,
      key,
      refresh: false,
      scratch,
      requireDebs: true,
      ...(o.onLine ? { onLine: o.onLine } : {}),
    });
    if (!r.suites)
      throw new KilnError("LOCK_MIRROR", "the mirror did not answer: a lock needs today's suites", {
        hint: "check the network and distribution.mirror",
      });
    const packages = parsePrintUris(await readFile(debsOf(r.tar), "utf8"));
    const offers = plan.recipe.kernel
      ? (await exec("tar", ["-xOf", r.tar, `.${APT_OFFERS}`], { okCodes: [0, 2] })).stdout
      : "";
    const lock = makeLock({
      distro: loaded.spec.distribution.id,
      recipe: plan.recipe,
      suites: r.suites,
      packages,
      ...(offers ? { kernelOffers: offers } : {}),
    });
    await writeFileAtomic(file, formatLock(lock));
    return { file, lock, changes: lockChanges(before.lock, lock), replaced: before.exists };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** An old lock to compare with; one that no longer parses is replaced (its changes unknown). */
function readLockQuiet(file: string): { exists: boolean; lock?: Lock } {
  try {
    const lock = readLock(file);
    return lock ? { exists: true, lock } : { exists: false };
  } catch {
    return { exists: true };
  }
}
