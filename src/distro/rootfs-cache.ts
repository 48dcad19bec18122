import { existsSync, readdirSync, statSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { onCleanup } from "../util/cleanup.js";
import { exec } from "../util/exec.js";
import { cacheKey } from "../util/hash.js";
import { log } from "../util/log.js";
import { cacheDir } from "../util/paths.js";
import { shellQuote } from "../util/shell.js";
import { mirrorArgs, type RootfsRecipe } from "./mmdebstrap.js";
import { type SuiteState, suiteStates } from "./release.js";

export interface CachedRootfsOptions {
  recipe: RootfsRecipe;
  distro: string;
  /** Content hash of the recipe: the first part of the cache entry's name. */
  key: string;
  refresh: boolean;
  /** mmdebstrap's scratch space; the caller removes it. */
  scratch: string;
  /** The suites' Release dates when the caller asked the mirror already (null: it did not answer; absent: ask). */
  suites?: SuiteState[] | null | undefined;
  /** `kiln lock` needs the package list a bootstrap records beside its tar (older roots lack it). */
  requireDebs?: boolean;
  onLine?: (line: string) => void;
}

export interface CachedRootfs {
  tar: string;
  bootstrapped: boolean;
  /** When the root was bootstrapped (ISO time). */
  bootstrappedAt: string;
  /** The suites' Release dates it was made from; undefined when the mirror could not be asked. */
  suites: SuiteState[] | undefined;
  /** SOURCE_DATE_EPOCH for builds from it: the newest suite's Release date (the root's age offline). */
  epoch: number;
}

function epochOf(suites: SuiteState[] | undefined, tar: string): number {
  const ms = suites?.length
    ? Math.max(...suites.map((s) => Date.parse(s.date)))
    : statSync(tar).mtimeMs;
  return Math.floor(ms / 1000);
}

/**
 * The cached root filesystem tarball for a recipe as the mirror is now,
 * bootstrapping it first if any suite changed. With the mirror unreachable,
 * the newest cached root of the recipe serves, with a warning naming its age.
 */
export async function cachedRootfs(o: CachedRootfsOptions): Promise<CachedRootfs> {
  const dir = cacheDir("rootfs");
  const suites =
    o.suites === undefined ? await suiteStates(o.recipe.sources) : (o.suites ?? undefined);
  if (!suites) {
    const newest = entriesOf(dir, o.key)[0];
    if (newest && !o.refresh) {
      const at = statSync(newest).mtime.toISOString();
      log.warn(
        `the mirror did not answer: using the root bootstrapped ${age(at)} ago, which may lack security fixes`,
      );
      return {
        tar: newest,
        bootstrapped: false,
        bootstrappedAt: at,
        suites,
        epoch: epochOf(suites, newest),
      };
    }
  }
  const tar = join(dir, `${o.key}-${suites ? cacheKey(suites) : "offline"}.tar`);
  if (!o.refresh && existsSync(tar) && (!o.requireDebs || existsSync(debsOf(tar))))
    return {
      tar,
      bootstrapped: false,
      bootstrappedAt: statSync(tar).mtime.toISOString(),
      suites,
      epoch: epochOf(suites, tar),
    };
  await bootstrap(o, tar, suites ? epochOf(suites, "") : undefined);
  if (suites) await writeFile(`${tar}.json`, `${JSON.stringify(suites, null, 2)}\n`);
  // Older roots of the same recipe only hold outdated packages now.
  for (const old of entriesOf(dir, o.key).filter((f) => f !== tar))
    for (const f of [old, `${old}.json`, debsOf(old), kernelIndexOf(old)])
      await rm(f, { force: true });
  return {
    tar,
    bootstrapped: true,
    bootstrappedAt: new Date().toISOString(),
    suites,
    epoch: epochOf(suites, tar),
  };
}

/** Beside a cached root: `apt-get download --print-uris` of every package in it (what `kiln lock` writes down). */
export function debsOf(tar: string): string {
  return `${tar}.debs`;
}

/** Beside a cached root: its /boot and module-tree members, listed once (see modules.ts, modulesToDefer). */
export function kernelIndexOf(tar: string): string {
  return `${tar}.kernel.json`;
}

/** The cached roots of one recipe, newest first. */
function entriesOf(dir: string, key: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.startsWith(`${key}-`) && f.endsWith(".tar"))
    .map((f) => join(dir, f))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
}

/** "3 h", "2 d": how long ago an ISO time was. */
export function age(iso: string, now = Date.now()): string {
  const s = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 2 * 86400) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

async function bootstrap(o: CachedRootfsOptions, target: string, epoch?: number): Promise<void> {
  const r = o.recipe;
  const apt = cacheDir("apt", `${o.distro}-${r.release}-${r.arch}`);
  await mkdir(apt, { recursive: true });
  await mkdir(cacheDir("rootfs"), { recursive: true });
  const partial = `${target}.partial-${process.pid}`;
  await mkdir(o.scratch, { recursive: true });
  const drop = onCleanup(`partial rootfs ${partial}`, async () => {
    await rm(partial, { force: true });
    await rm(debsOf(partial), { force: true });
  });
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
        // Where each installed package came from, with apt's verified sha256, while the lists are there.
        `--customize-hook=chroot "$1" dpkg-query -W -f='\${binary:Package}=\${Version}\n' | xargs -r chroot "$1" apt-get download --print-uris > ${shellQuote(debsOf(partial))}`,
        "--skip=download/empty",
        "--format=tar",
        r.release,
        partial,
        // One `deb` line per suite: mmdebstrap builds from all and writes them to sources.list.
        ...mirrorArgs(r),
      ],
      {
        // mmdebstrap's scratch chroot goes inside the caller's work directory,
        // so whatever an interrupted run leaves is removed with it.
        // With SOURCE_DATE_EPOCH mmdebstrap clamps times and leaves out what is random.
        env: {
          TMPDIR: o.scratch,
          SOURCE_DATE_EPOCH: epoch === undefined ? undefined : String(epoch),
        },
        // mmdebstrap cleans up after SIGINT (what Ctrl-C sends it); give it time.
        stopSignal: "SIGINT",
        stopGraceMs: 60_000,
        ...(o.onLine ? { onLine: o.onLine } : {}),
        hint: `mmdebstrap could not build ${o.distro} ${r.release} from ${r.sources.map((s) => `${s.uri} ${s.suite}`).join(", ")}: check the release name, the mirrors and the network`,
      },
    );
    await rename(debsOf(partial), debsOf(target));
    await rename(partial, target);
  } finally {
    drop();
    await rm(partial, { force: true });
    await rm(debsOf(partial), { force: true });
  }
}
