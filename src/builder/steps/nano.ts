import { type Dirent, existsSync } from "node:fs";
import {
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  rm,
  rmdir,
  writeFile,
} from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import { formatPackageList, PACKAGE_LIST } from "../../distro/packages.js";
import { packageManagerRemoval, pamModulesNamed, parseDpkgStatus } from "../../distro/prune.js";
import { neededLibraries } from "../../util/elf.js";
import { KilnError } from "../../util/errors.js";
import type { BuildContext } from "../context.js";

/** The package manager's state and configuration, beyond the files its packages list. */
const STATE = [
  "var/lib/dpkg",
  "var/lib/apt",
  "var/cache/apt",
  "var/cache/debconf",
  "var/lib/ucf",
  "var/log/apt",
  "etc/apt",
  "etc/dpkg",
  "var/lib/kiln/apt-offers",
  // Hooks and completions of programs that are gone (mkinitramfs, kernel postinst, shells' completion engines).
  "usr/share/initramfs-tools",
  "etc/initramfs-tools",
  "etc/kernel",
  "usr/share/bash-completion",
  "usr/share/zsh",
  "usr/share/bug",
  "usr/share/lintian",
];

/** Where a program whose interpreter went with the package manager (pam-auth-update: perl) may be. */
const SCRIPT_DIRS = ["usr/bin", "usr/sbin", "usr/lib", "usr/libexec", "usr/share"];

/** Directories whose symlinks may point into what was removed (alternatives, enabled units). */
const LINK_DIRS = ["etc/alternatives", "etc/systemd/system", "usr/bin", "usr/sbin", "etc/rc0.d"];

/**
 * Flatcar Nano's idea on a Debian root: after the minimal profile's cuts,
 * remove the package manager (apt, dpkg, debconf, perl and the install-time
 * helpers) and every library only they used, then prove every program left
 * still finds its libraries. The image cannot install packages afterwards;
 * it is rebuilt instead.
 */
export async function dropPackageManager(
  ctx: BuildContext,
): Promise<{ removed: string[]; bytes: number; dead: string[]; unloaded: string[] }> {
  const { root } = ctx;
  const info = join(root, "var/lib/dpkg/info");
  const installed = parseDpkgStatus(await readFile(join(root, "var/lib/dpkg/status"), "utf8"));
  const { remove, kept } = packageManagerRemoval(installed, ctx.spec.packages);
  const listOf = async (name: string, arch: string) => {
    for (const f of [`${name}:${arch}.list`, `${name}.list`]) {
      if (existsSync(join(info, f))) return (await readFile(join(info, f), "utf8")).split("\n");
    }
    return [];
  };
  // A directory (or a file, with diversions) a kept package also lists stays.
  const keptPaths = new Set<string>();
  const keptLists = new Map<string, string[]>();
  for (const p of kept) {
    const list = await listOf(p.name, p.arch);
    keptLists.set(p.name, list);
    for (const l of list) keptPaths.add(l);
  }
  const files: string[] = [];
  const dirs: string[] = [];
  let bytes = 0;
  const gone = new Set(remove);
  for (const p of installed.filter((q) => gone.has(q.name))) {
    for (const l of await listOf(p.name, p.arch)) {
      if (!l.startsWith("/") || l === "/." || keptPaths.has(l)) continue;
      const st = await lstat(join(root, l)).catch(() => undefined);
      if (!st) continue;
      if (st.isDirectory()) dirs.push(l);
      else {
        files.push(l);
        bytes += st.isFile() && st.nlink === 1 ? st.size : 0;
      }
    }
  }
  for (const f of files) await rm(join(root, f), { force: true });
  // Deepest first; a directory something else still uses is not empty and stays.
  for (const d of dirs.sort((a, b) => b.length - a.length))
    await rmdir(join(root, d)).catch(() => {});
  const unloaded = await dropUnusedPamModules(root);
  bytes += unloaded.bytes;
  // A library package whose every file went with the modules is gone too (its docs go with it).
  const unloadedSet = new Set(unloaded.paths);
  const left: typeof kept = [];
  for (const p of kept) {
    const own = keptLists.get(p.name)!.filter((l) => l.startsWith("/") && l !== "/.");
    const body = own.filter((l) => !l.startsWith("/usr/share/doc/"));
    // Only a package that lost a file here can have been emptied here.
    const emptied =
      body.some((l) => unloadedSet.has(l)) &&
      (await Promise.all(body.map((l) => lstat(join(root, l)).catch(() => undefined)))).every(
        (st) => !st || st.isDirectory(),
      );
    if (!emptied) {
      left.push(p);
      continue;
    }
    remove.push(p.name);
    for (const l of own.filter((x) => x.startsWith("/usr/share/doc/")).reverse())
      await rm(join(root, l), { force: true, recursive: true });
  }
  remove.sort();
  for (const s of STATE) await rm(join(root, s), { recursive: true, force: true });
  const dead = await removeOrphanScripts(root);
  await removeDangling(root, LINK_DIRS);

  await mkdir(join(root, dirname(PACKAGE_LIST)), { recursive: true });
  await writeFile(join(root, PACKAGE_LIST), formatPackageList(left));
  await checkLibraries(root);
  return { removed: remove, bytes, dead, unloaded: unloaded.paths };
}

/**
 * PAM modules no /etc/pam.d file names are never loaded: remove them, then
 * each library one of them needed that no program or library left needs
 * (pam_userdb.so took libdb, 1.8 MB). Only libraries a removed module named
 * are candidates, never one that something may dlopen by itself.
 */
async function dropUnusedPamModules(root: string): Promise<{ paths: string[]; bytes: number }> {
  const pamd = join(root, "etc/pam.d");
  if (!existsSync(pamd)) return { paths: [], bytes: 0 };
  const configs: string[] = [];
  for (const f of await readdir(pamd, { withFileTypes: true }))
    if (f.isFile()) configs.push(await readFile(join(pamd, f.name), "utf8"));
  const named = pamModulesNamed(configs);
  // One read of every ELF's DT_NEEDED, then counted down as files go: a
  // library whose count reaches zero is needed by nothing left.
  const { elves, byName } = await libraryFiles(root);
  const needs = new Map<string, string[]>();
  const users = new Map<string, number>();
  for (const f of elves) {
    const n = (await neededLibraries(f)) ?? [];
    needs.set(f, n);
    for (const x of n) users.set(x, (users.get(x) ?? 0) + 1);
  }
  const paths: string[] = [];
  let bytes = 0;
  const unneeded: string[] = [];
  const drop = async (path: string) => {
    const st = await lstat(path).catch(() => undefined);
    if (!st) return; // gone already, through another of its names
    if (st.isFile() && st.nlink === 1) bytes += st.size;
    for (const n of needs.get(path) ?? []) {
      const left = users.get(n)! - 1;
      users.set(n, left);
      if (left === 0) unneeded.push(n);
    }
    await rm(path);
    paths.push(path.slice(root.length));
  };
  for (const path of elves) {
    const name = path.slice(path.lastIndexOf("/") + 1);
    if (!/^pam_.*\.so$/.test(name) || !path.endsWith(`/security/${name}`) || named.has(name))
      continue;
    await drop(path);
  }
  // Libraries can need libraries: what a dropped library needed may be unneeded now.
  while (unneeded.length) {
    for (const path of byName.get(unneeded.pop()!) ?? []) {
      const st = await lstat(path).catch(() => undefined);
      // The soname is often a link to the versioned file: both go.
      if (st?.isSymbolicLink()) {
        const target = join(dirname(path), await readlink(path));
        await rm(path);
        paths.push(path.slice(root.length));
        await drop(target);
      } else await drop(path);
    }
  }
  return { paths, bytes };
}

/** Executable scripts whose `#!` interpreter is not in the root any more: nothing can run them. */
async function removeOrphanScripts(root: string): Promise<string[]> {
  const dead: string[] = [];
  for (const { path, entry } of await entriesUnder(root, SCRIPT_DIRS)) {
    if (!entry.isFile()) continue;
    const st = await lstat(path);
    if (!(st.mode & 0o111) || st.size < 4) continue;
    const fh = await open(path, "r");
    const head = Buffer.alloc(128);
    const { bytesRead } = await fh.read(head, 0, 128, 0).finally(() => fh.close());
    const text = head.subarray(0, bytesRead).toString("latin1");
    const interp = /^#!\s*(\/\S+)/.exec(text)?.[1];
    if (!interp) continue;
    // "#!/usr/bin/env perl": the program env runs must be there.
    const viaEnv = /^#!\s*\/usr\/bin\/env\s+([^\s/]+)/.exec(text)?.[1];
    const needs = viaEnv ? [`usr/bin/${viaEnv}`, `usr/sbin/${viaEnv}`] : [interp];
    if (needs.some((n) => existsSync(join(root, n)))) continue;
    await rm(path);
    dead.push(path.slice(root.length));
  }
  return dead;
}

/** Every entry below each of DIRS (relative to ROOT; missing ones skipped), recursively. */
async function entriesUnder(
  root: string,
  dirs: readonly string[],
): Promise<{ path: string; entry: Dirent }[]> {
  const out: { path: string; entry: Dirent }[] = [];
  for (const d of dirs) {
    if (!existsSync(join(root, d))) continue;
    for (const entry of await readdir(join(root, d), { withFileTypes: true, recursive: true }))
      out.push({ path: join(entry.parentPath, entry.name), entry });
  }
  return out;
}

/** Symlinks under DIRS (recursively) whose target, resolved inside the root, is gone. */
async function removeDangling(root: string, dirs: readonly string[]): Promise<void> {
  for (const { path, entry } of await entriesUnder(root, dirs))
    if (entry.isSymbolicLink() && !(await resolvesInRoot(root, path))) await rm(path);
}

/** Follow a symlink chain the way the booted system would: absolute targets inside ROOT. */
async function resolvesInRoot(root: string, link: string): Promise<boolean> {
  let at = link;
  for (let hop = 0; hop < 40; hop++) {
    const target = await readlink(at);
    // Masked units point at /dev/null, which exists on the booted system only.
    if (target === "/dev/null") return true;
    at = isAbsolute(target) ? join(root, target) : join(dirname(at), target);
    const st = await lstat(at).catch(() => undefined);
    if (!st) return false;
    if (!st.isSymbolicLink()) return true;
  }
  return false;
}

/**
 * The regular files under ELF_DIRS (programs and libraries, the kernel's
 * modules aside), and every entry there by file name: what the loader can find.
 */
async function libraryFiles(
  root: string,
): Promise<{ elves: string[]; byName: Map<string, string[]> }> {
  const byName = new Map<string, string[]>();
  const elves: string[] = [];
  const modules = join(root, "usr/lib/modules/");
  for (const { path, entry } of await entriesUnder(root, ELF_DIRS)) {
    if (path.startsWith(modules)) continue;
    byName.set(entry.name, [...(byName.get(entry.name) ?? []), path]);
    if (entry.isFile()) elves.push(path);
  }
  return { elves, byName };
}

/** Where the programs and libraries of a merged-/usr root are (the kernel's modules aside). */
const ELF_DIRS = ["usr/bin", "usr/sbin", "usr/lib", "usr/libexec", "usr/lib64"];

/**
 * Every dynamically linked program and library left must still find its
 * libraries: each DT_NEEDED name is a file somewhere under the library
 * directories (a name in a private directory, libsystemd-shared, is found
 * through its program's RUNPATH).
 */
export async function checkLibraries(root: string): Promise<void> {
  const { elves, byName } = await libraryFiles(root);
  const present = new Set(byName.keys());
  const missing: string[] = [];
  for (const f of elves) {
    for (const n of (await neededLibraries(f)) ?? [])
      if (!present.has(n)) missing.push(`${f.slice(root.length)} needs ${n}`);
  }
  if (missing.length)
    throw new KilnError(
      "PROFILE_NANO",
      `after removing the package manager, ${missing.length} librar${missing.length === 1 ? "y is" : "ies are"} missing: ${missing.slice(0, 5).join("; ")}${missing.length > 5 ? "; …" : ""}`,
      { hint: "add the package of the library to packages:, or use profile: minimal" },
    );
}
