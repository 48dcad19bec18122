import { existsSync, readdirSync, statSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { trimmed } from "../../config/schema.js";
import { exec } from "../../util/exec.js";
import { cacheKey } from "../../util/hash.js";
import { cacheDir } from "../../util/paths.js";
import { archiveTree, extractTree } from "../../util/tar.js";
import { inRoot } from "../chroot.js";
import type { BuildContext } from "../context.js";

/**
 * Remove what a running minimal system never reads. Docs, man pages and
 * locales were already kept out by dpkg path filters during the bootstrap;
 * this removes caches and logs of the build, and with the minimal profile
 * also the udev hardware database (descriptions only), non-UTF gconv
 * modules, and compresses kernel modules (kmod reads .ko.zst).
 */
export async function minimizeStep(ctx: BuildContext): Promise<void> {
  const { root } = ctx;
  const globs = [
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/log/apt/*",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
  ];
  if (!trimmed(ctx.spec)) return removeGlobs(root, globs);
  globs.push("usr/lib/udev/hwdb.bin", "etc/udev/hwdb.bin");
  await removeGlobs(root, globs);
  // dpkg keeps the directories of paths it filtered out.
  for (const d of ["usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info"]) {
    if (existsSync(join(root, d)))
      await exec("find", [join(root, d), "-mindepth", "1", "-type", "d", "-empty", "-delete"]);
  }

  const gconv = findGconv(root);
  if (gconv) {
    for (const f of readdirSync(gconv)) {
      if (f.endsWith(".so") && !/^(UTF|UNICODE|ISO8859-1\.so)/.test(f)) await rm(join(gconv, f));
    }
  }
  const version = ctx.facts.kernelVersion;
  if (version && existsSync(join(root, "usr/lib/modules", version)))
    await compressModules(ctx, version);
}

/**
 * The initrd was made from the uncompressed modules already; now shrink the
 * rest (kmod reads .ko.zst). The result depends only on the root the build
 * started from, so it is cached by that root: a build that changed a file
 * or a user unpacks the compressed tree instead of compressing it again.
 */
async function compressModules(ctx: BuildContext, version: string): Promise<void> {
  const dir = join(ctx.root, "usr/lib/modules", version);
  // A spec file inside the module tree makes it the spec's own: no cache then.
  const own = ctx.spec.files.some((f) => f.path.startsWith("/usr/lib/modules"));
  // Pruned trees differ by the modules the spec keeps.
  const kept = ctx.facts.modules?.kept ?? "all";
  const key = ctx.rootId && !own ? cacheKey(ctx.rootId, version, "zstd-9", kept) : undefined;
  const cached = key ? cacheDir("modules", `${key}.tar`) : undefined;
  if (cached && existsSync(cached)) {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir);
    await extractTree(cached, dir);
    return;
  }
  await exec("sh", [
    "-c",
    'find "$1" -name "*.ko" -print0 | xargs -0 -r -P2 -n 200 zstd -q --rm -9',
    "sh",
    dir,
  ]);
  await inRoot(ctx.root, "depmod", [version]);
  if (!cached) return;
  await mkdir(dirname(cached), { recursive: true });
  const partial = `${cached}.partial-${process.pid}`;
  try {
    await archiveTree(dir, partial);
    await rename(partial, cached);
  } finally {
    await rm(partial, { force: true });
  }
  // The three newest trees are all warm builds read (one per root a spec builds from).
  const all = readdirSync(dirname(cached))
    .filter((f) => f.endsWith(".tar"))
    .map((f) => join(dirname(cached), f))
    .sort((x, y) => statSync(y).mtimeMs - statSync(x).mtimeMs);
  for (const old of all.slice(3)) await rm(old, { force: true });
}

async function removeGlobs(root: string, globs: string[]): Promise<void> {
  await exec("sh", ["-c", 'cd "$1" && shift && rm -rf -- $@', "sh", root, ...globs]);
}

function findGconv(root: string): string | undefined {
  for (const d of ["usr/lib/x86_64-linux-gnu/gconv", "usr/lib/aarch64-linux-gnu/gconv"]) {
    if (existsSync(join(root, d))) return join(root, d);
  }
  return undefined;
}
