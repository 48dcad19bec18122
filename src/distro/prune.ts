/**
 * The nano profile's cut, as data: which installed packages go when the
 * image drops its package manager. Pure (no file system), so unit tests feed
 * it a dpkg status file.
 */
import { KilnError } from "../util/errors.js";

export interface StatusEntry {
  name: string;
  arch: string;
  version: string;
  section: string;
  essential: boolean;
  installedKiB: number;
  /** Depends and Pre-Depends: each a list of alternatives, names only. */
  deps: string[][];
  provides: string[];
}

/**
 * What only installing, configuring or upgrading packages needs: once dpkg is
 * gone, nothing runs these. Packages that depend on them (openssh-server on
 * adduser and ucf, udev on adduser) only call them from maintainer scripts.
 */
const INSTALL_TIME = [
  "apt",
  "apt-utils",
  "libapt-pkg6.0",
  "dpkg",
  "debconf",
  "debconf-i18n",
  "adduser",
  "ucf",
  "gpgv",
  "debian-archive-keyring",
  "ubuntu-keyring",
  "init-system-helpers",
  "linux-base",
  "tiny-initramfs",
  "tiny-initramfs-core",
  "initramfs-tools",
  "initramfs-tools-core",
];

/** perl: an interpreter a kept package may really need at run time (then the cut is refused). */
const PERL = /^(perl|perl-base|perl-modules-[0-9.]+|libperl[0-9.]+)$/;

/** Packages the nano profile removes by name (before the libraries only they used). */
export function isPackageManagerPart(name: string): boolean {
  return INSTALL_TIME.includes(name) || PERL.test(name);
}

/** The installed packages of a dpkg status file. */
export function parseDpkgStatus(text: string): StatusEntry[] {
  const out: StatusEntry[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const f = new Map<string, string>();
    let last = "";
    for (const line of stanza.split("\n")) {
      if (/^\s/.test(line) && last) f.set(last, `${f.get(last)}\n${line}`);
      else {
        const i = line.indexOf(":");
        if (i <= 0) continue;
        last = line.slice(0, i);
        f.set(last, line.slice(i + 1).trim());
      }
    }
    const name = f.get("Package");
    if (!name || !/\binstalled$/.test(f.get("Status") ?? "")) continue;
    out.push({
      name,
      arch: f.get("Architecture") ?? "all",
      version: f.get("Version") ?? "",
      section: f.get("Section") ?? "",
      essential: f.get("Essential") === "yes",
      installedKiB: Number(f.get("Installed-Size")) || 0,
      deps: [...relations(f.get("Pre-Depends")), ...relations(f.get("Depends"))],
      provides: relations(f.get("Provides")).map((alts) => alts[0]!),
    });
  }
  return out;
}

/** `a (>= 1) | b:any, c` → [[a, b], [c]]. */
function relations(field: string | undefined): string[][] {
  if (!field) return [];
  return field
    .split(",")
    .map((group) =>
      group
        .split("|")
        .map((alt) => alt.trim().split(/[\s(:]/)[0]!)
        .filter(Boolean),
    )
    .filter((alts) => alts.length > 0);
}

const isLibrary = (p: StatusEntry) =>
  !p.essential && (p.section === "libs" || p.section === "oldlibs" || p.name.startsWith("lib"));

export interface Removal {
  /** Package names to remove, sorted. */
  remove: string[];
  kept: StatusEntry[];
}

/**
 * The package manager's parts, then every library nothing kept depends on
 * (through Depends and Pre-Depends, any installed alternative, virtual names
 * through Provides). Programs are never collected: a tool nobody depends on
 * is still a tool. `keep` (the spec's packages) stays whatever it is.
 */
export function packageManagerRemoval(installed: StatusEntry[], keep: Iterable<string>): Removal {
  const keepSet = new Set(keep);
  const byName = new Map<string, StatusEntry[]>();
  for (const p of installed) {
    for (const n of [p.name, ...p.provides]) byName.set(n, [...(byName.get(n) ?? []), p]);
  }
  const seed = new Set(
    installed
      .filter((p) => isPackageManagerPart(p.name) && !keepSet.has(p.name))
      .map((p) => p.name),
  );
  // A kept package that names perl itself (not among alternatives) runs it.
  const needPerl = installed.filter(
    (p) => !seed.has(p.name) && p.deps.some((alts) => alts.every((a) => PERL.test(a))),
  );
  if (needPerl.length)
    throw new KilnError(
      "PROFILE_NANO",
      `${needPerl.map((p) => p.name).join(", ")} need${needPerl.length === 1 ? "s" : ""} perl at run time, which the nano profile removes`,
      { hint: "use profile: minimal for this image" },
    );
  const reachable = new Set<string>();
  const queue = installed.filter(
    (p) => !seed.has(p.name) && (!isLibrary(p) || keepSet.has(p.name)),
  );
  for (const p of queue) reachable.add(p.name);
  while (queue.length) {
    const p = queue.pop()!;
    for (const alts of p.deps) {
      for (const a of alts) {
        for (const q of byName.get(a) ?? []) {
          if (seed.has(q.name) || reachable.has(q.name)) continue;
          reachable.add(q.name);
          queue.push(q);
        }
      }
    }
  }
  const remove = installed
    .filter((p) => !reachable.has(p.name))
    .map((p) => p.name)
    .sort();
  return { remove, kept: installed.filter((p) => reachable.has(p.name)) };
}

/**
 * The PAM modules a set of /etc/pam.d files names (file names, e.g.
 * pam_unix.so), comments left out. A module no configuration names is never
 * loaded, so the nano profile can remove it and the libraries only it needed.
 */
export function pamModulesNamed(configs: string[]): Set<string> {
  const named = new Set<string>();
  for (const text of configs) {
    for (const line of text.split("\n")) {
      const code = line.replace(/#.*/, "");
      for (const m of code.matchAll(/(?:^|[\s/])(pam_[\w.-]+\.so)(?=\s|$)/g)) named.add(m[1]!);
    }
  }
  return named;
}
