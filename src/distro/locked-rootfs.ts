import { createHash } from "node:crypto";
import { createWriteStream, existsSync } from "node:fs";
import { copyFile, link, mkdir, rename, rm, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { sha256File } from "../util/hash.js";
import { cacheDir } from "../util/paths.js";
import { debLine } from "./driver.js";
import { debFileName, type Lock, type LockedPackage, lockHash, staleness } from "./lock.js";
import { APT_OFFERS, type RootfsRecipe } from "./mmdebstrap.js";

export interface LockedRootfsOptions {
  recipe: RootfsRecipe;
  distro: string;
  key: string;
  lock: Lock;
  lockFile: string;
  refresh: boolean;
  scratch: string;
  onLine?: (line: string) => void;
}

/**
 * The root filesystem a lock describes: exactly its packages, each .deb
 * checked against the lock's sha256 before anything is installed, taken
 * from kiln's apt cache or downloaded from the URL the lock names. They are
 * installed from a repository of just those files, so apt cannot choose
 * another version; the mirror is not asked once the root is cached.
 */
export async function lockedRootfs(o: LockedRootfsOptions): Promise<{
  tar: string;
  bootstrapped: boolean;
}> {
  const why = staleness(o.lock, o.distro, o.recipe);
  if (why.length)
    throw new KilnError("LOCK_STALE", `${o.lockFile} does not fit the spec: ${why.join("; ")}`, {
      hint: "run kiln lock --update SPEC to lock the spec as it is now",
    });
  const dir = cacheDir("rootfs");
  const tar = join(dir, `${o.key}-lock-${lockHash(o.lock)}.tar`);
  if (!o.refresh && existsSync(tar)) return { tar, bootstrapped: false };
  const apt = cacheDir("apt", `${o.distro}-${o.recipe.release}-${o.recipe.arch}`);
  await mkdir(apt, { recursive: true });
  await mkdir(dir, { recursive: true });
  const debs = await fetchLocked(o.lock, apt, o.lockFile, o.onLine);
  const repo = await lockedRepo(debs, o.recipe, o.scratch);
  // What the image keeps instead of the repository: the lock's sources and kernel offers.
  const sources = join(o.scratch, "sources.list");
  await writeFile(sources, `${o.lock.sources.join("\n")}\n`);
  const offers = join(o.scratch, "apt-offers");
  await writeFile(offers, o.lock.kernelOffers ?? "");
  const partial = `${tar}.partial-${process.pid}`;
  const drop = onCleanup(`partial rootfs ${partial}`, () => rm(partial, { force: true }));
  try {
    const args = o.recipe.args.filter(
      (a) => !a.startsWith("--variant=") && !a.startsWith("--include=") && !a.includes(APT_OFFERS),
    );
    await exec(
      "mmdebstrap",
      [
        "--mode=root",
        // Essential packages and exactly the locked ones: nothing is chosen by priority.
        "--variant=essential",
        ...args,
        `--include=${o.lock.packages.map((p) => `${p.name}:${p.arch}`).join(",")}`,
        `--customize-hook=upload ${sources} /etc/apt/sources.list`,
        ...(o.lock.kernelOffers
          ? [
              `--customize-hook=mkdir -p "$1${APT_OFFERS.slice(0, APT_OFFERS.lastIndexOf("/"))}"`,
              `--customize-hook=upload ${offers} ${APT_OFFERS}`,
            ]
          : []),
        "--format=tar",
        o.recipe.release,
        partial,
        // copy://: apt copies each file into the chroot, where dpkg (and mmdebstrap's hooks) find it.
        debLine({
          uri: `[trusted=yes] copy://${repo}`,
          suite: o.recipe.release,
          components: ["main"],
        }),
      ],
      {
        env: { TMPDIR: o.scratch, SOURCE_DATE_EPOCH: String(o.lock.sourceDateEpoch) },
        stopSignal: "SIGINT",
        stopGraceMs: 60_000,
        ...(o.onLine ? { onLine: o.onLine } : {}),
        hint: `mmdebstrap could not install the packages ${o.lockFile} names`,
      },
    );
    await checkInstalled(partial, o.lock, o.lockFile);
    await rename(partial, tar);
  } finally {
    drop();
    await rm(partial, { force: true });
  }
  return { tar, bootstrapped: true };
}

/**
 * A repository of just the verified files, as the release's suite (mmdebstrap
 * picks Essential packages by the suite it is asked for). Unsigned: the
 * lock's hashes, already checked, are what it is trusted by.
 */
async function lockedRepo(
  debs: VerifiedDeb[],
  recipe: RootfsRecipe,
  scratch: string,
): Promise<string> {
  const repo = join(scratch, "locked-repo");
  const index = join(repo, "dists", recipe.release, "main", `binary-${recipe.arch}`);
  await mkdir(join(repo, "pool"), { recursive: true });
  await mkdir(index, { recursive: true });
  const stanzas: string[] = [];
  for (const p of debs) {
    const to = join(repo, "pool", basename(p.file));
    await link(p.file, to).catch(() => copyFile(p.file, to));
    // The control fields as the .deb has them, then where apt finds it and what it must hash to.
    const { stdout } = await exec("dpkg-deb", ["-f", to]);
    stanzas.push(
      `${stdout.trimEnd()}\nFilename: pool/${basename(p.file)}\nSize: ${p.size}\nSHA256: ${p.sha256}\n`,
    );
  }
  await writeFile(join(index, "Packages"), `${stanzas.join("\n")}`);
  await writeFile(
    join(repo, "dists", recipe.release, "Release"),
    `Suite: ${recipe.release}\nCodename: ${recipe.release}\nArchitectures: ${recipe.arch} all\nComponents: main\n`,
  );
  return repo;
}

/**
 * Every locked .deb, verified: from the cache when its bytes match, else
 * downloaded (bounded by the locked size). Problems are gathered so one run
 * names them all, and nothing is built when there is any.
 */
async function fetchLocked(
  lock: Lock,
  apt: string,
  lockFile: string,
  onLine?: (l: string) => void,
): Promise<VerifiedDeb[]> {
  const gone: string[] = [];
  const wrong: string[] = [];
  const files: VerifiedDeb[] = [];
  let fetched = 0;
  const queue = [...lock.packages];
  const worker = async () => {
    for (let p = queue.shift(); p; p = queue.shift()) {
      const file = join(apt, debFileName(p));
      if (existsSync(file) && (await sha256File(file)) === p.sha256) {
        files.push({ file, size: p.size, sha256: p.sha256 });
        continue;
      }
      const r = await download(p, file);
      if (r === "ok") {
        files.push({ file, size: p.size, sha256: p.sha256 });
        onLine?.(`fetched ${++fetched}: ${p.name} ${p.version}`);
      } else if (r === "gone") gone.push(`${p.name} ${p.version} (${p.url})`);
      else wrong.push(`${p.name} ${p.version}: ${r}`);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  if (wrong.length)
    throw new KilnError(
      "LOCK_HASH_MISMATCH",
      `refusing ${wrong.length} .deb${wrong.length > 1 ? "s" : ""} whose bytes are not what ${lockFile} locked:\n  ${wrong.slice(0, 20).join("\n  ")}`,
      {
        hint: "the mirror (or the lock) was altered; if the lock is wrong, re-lock with kiln lock --update",
      },
    );
  if (gone.length)
    throw new KilnError(
      "LOCK_VERSION_GONE",
      `${gone.length} locked version${gone.length > 1 ? "s are" : " is"} neither in kiln's cache nor on the mirror:\n  ${gone.slice(0, 20).join("\n  ")}`,
      {
        hint: "point distribution.mirror (and security_mirror) at a snapshot that has them, e.g. https://snapshot.debian.org/archive/debian/20261201T000000Z/, then kiln lock --update; or kiln lock --update to take today's versions",
      },
    );
  return files.sort((x, y) => x.file.localeCompare(y.file));
}

interface VerifiedDeb {
  file: string;
  size: number;
  sha256: string;
}

/** Download one locked .deb into the cache; the file appears only when its hash matched. */
async function download(p: LockedPackage, file: string): Promise<"ok" | "gone" | string> {
  const part = `${file}.partial-${process.pid}`;
  try {
    const res = await fetch(p.url, { signal: AbortSignal.timeout(300_000) });
    if (res.status === 404 || res.status === 410) return "gone";
    if (!res.ok || !res.body) return `HTTP ${res.status} from ${p.url}`;
    const h = createHash("sha256");
    let bytes = 0;
    const body = Readable.fromWeb(res.body as import("node:stream/web").ReadableStream);
    body.on("data", (c: Buffer) => {
      bytes += c.length;
      h.update(c);
      if (bytes > p.size) body.destroy(new Error(`more than the locked ${p.size} bytes`));
    });
    await pipeline(body, createWriteStream(part));
    const got = h.digest("hex");
    if (got !== p.sha256) return `sha256 ${got} from ${p.url}, locked ${p.sha256}`;
    await rename(part, file);
    return "ok";
  } catch (err) {
    return `${p.url}: ${(err as Error).message}`;
  } finally {
    await rm(part, { force: true });
  }
}

/** The bootstrapped root holds exactly the locked packages, or the build stops. */
async function checkInstalled(tar: string, lock: Lock, lockFile: string): Promise<void> {
  const { stdout } = await exec("tar", ["-xOf", tar, "./var/lib/dpkg/status"]);
  const installed = new Set<string>();
  for (const stanza of stdout.split(/\n\n+/)) {
    const f = (k: string) => new RegExp(`^${k}: (.*)$`, "m").exec(stanza)?.[1];
    if (f("Status")?.endsWith(" installed"))
      installed.add(`${f("Package")}_${f("Version")}_${f("Architecture")}`);
  }
  const want = new Set(lock.packages.map((p) => `${p.name}_${p.version}_${p.arch}`));
  const extra = [...installed].filter((x) => !want.has(x));
  const missing = [...want].filter((x) => !installed.has(x));
  if (extra.length || missing.length)
    throw new KilnError(
      "LOCK_DRIFT",
      `the root built from ${lockFile} is not what it locks: ${[
        extra.length ? `also installed ${extra.join(", ")}` : "",
        missing.length ? `not installed ${missing.join(", ")}` : "",
      ]
        .filter(Boolean)
        .join("; ")}`,
      { hint: "re-lock with kiln lock --update" },
    );
}
