import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { inRoot } from "../chroot.js";
import type { BuildContext } from "../context.js";

/**
 * Work systemd would otherwise redo at every boot, done or ruled out once
 * while building (minimal profile). Under TCG every process the guest starts
 * costs the one emulated CPU thread tens to hundreds of milliseconds, and
 * generators run before anything else, so each idle one delays the login
 * prompt by its whole cost. Each cut is checked against the root as built:
 * something the image has (a crypttab, an rc.local, a SysV-only script, a
 * module list) keeps what it needs.
 */
export async function trimBootWork(ctx: BuildContext): Promise<string[]> {
  const { root, spec } = ctx;
  const cut: string[] = [];
  const generators = idleGenerators(root, spec.kernel.cmdline);
  if (generators.length) {
    const dir = join(root, "etc/systemd/system-generators");
    await mkdir(dir, { recursive: true });
    for (const g of generators) {
      await rm(join(dir, g), { force: true });
      await symlink("/dev/null", join(dir, g));
    }
    cut.push(...generators);
  }
  if (await dropEmptyModulesList(root)) cut.push("systemd-modules-load.service");
  if (!existsSync(join(root, "etc/systemd/system/default.target"))) {
    // graphical.target only adds a display manager this profile never has.
    await inRoot(root, "systemctl", ["set-default", "multi-user.target"]);
  }
  // Last, since it vouches for /usr as it is now.
  cut.push(...(await markUsrUpdated(ctx)));
  return cut;
}

const GENERATOR_DIRS = ["usr/lib/systemd/system-generators", "lib/systemd/system-generators"];
const UNIT_DIRS = ["etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"];

/**
 * Generators with nothing to generate in this image. A file they read that
 * appears later (an rc.local written by hand, a SysV-only package installed)
 * is not picked up: the README says so, and `services.unmask`-like escape is
 * removing the link in /etc/systemd/system-generators.
 */
export function idleGenerators(root: string, cmdline: string): string[] {
  const has = (p: string) => existsSync(join(root, p));
  const idle: Record<string, boolean> = {
    "systemd-sysv-generator": sysvScripts(root).every((s) =>
      UNIT_DIRS.some((d) => exists(join(root, d, `${s}.service`))),
    ),
    "systemd-rc-local-generator": !has("etc/rc.local"),
    "systemd-cryptsetup-generator": !has("etc/crypttab") && !/\brd\.luks|\bluks\./.test(cmdline),
    "systemd-integritysetup-generator": !has("etc/integritytab"),
    "systemd-veritysetup-generator": !has("etc/veritytab") && !/\bsystemd\.verity/.test(cmdline),
    "systemd-hibernate-resume-generator": !/\bresume=/.test(cmdline),
    // A VM's disk has no offline-update marker; kiln's own updates are A/B slots.
    "systemd-system-update-generator": true,
    // The root is named on the command line and kiln writes /etc/fstab for what else it mounts.
    "systemd-gpt-auto-generator": true,
  };
  const present = new Set(
    GENERATOR_DIRS.flatMap((d) => (existsSync(join(root, d)) ? readdirSync(join(root, d)) : [])),
  );
  return Object.keys(idle)
    .filter((g) => idle[g] && present.has(g))
    .sort();
}

/** SysV init scripts by the name a native unit would have (hwclock.sh is hwclock.service). */
function sysvScripts(root: string): string[] {
  const dir = join(root, "etc/init.d");
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f !== "README" && !f.startsWith("."))
    .map((f) => f.replace(/\.sh$/, ""));
}

/** Present, a dangling symlink included (a mask is a link to /dev/null, an alias a link). */
function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Debian links /etc/modules-load.d/modules.conf to /etc/modules, which lists
 * nothing, yet the link alone makes systemd-modules-load run (~1.3 s under
 * TCG). Without a module named there the link goes, and the unit's own
 * condition (a non-empty modules-load.d) skips it.
 */
export async function dropEmptyModulesList(root: string): Promise<boolean> {
  const link = join(root, "etc/modules-load.d/modules.conf");
  const list = join(root, "etc/modules");
  if (!exists(link) || !lstatSync(link).isSymbolicLink()) return false;
  const names = existsSync(list)
    ? readFileSync(list, "utf8")
        .split("\n")
        .map((l) => l.replace(/#.*/, "").trim())
        .filter(Boolean)
    : [];
  if (names.length) return false;
  await rm(link);
  return true;
}

/**
 * ConditionNeedsUpdate= units (systemd-sysusers here) run at a boot whenever
 * /usr is newer than /etc/.updated, which a fresh image always is, so every
 * first boot of every machine did the build's work again. Done here instead,
 * then the stamps systemd-update-done would write: its format, dated like
 * /usr. clampTimes may later date /usr back to the epoch, which only makes
 * /usr older than the stamp.
 */
async function markUsrUpdated(ctx: BuildContext): Promise<string[]> {
  const { root } = ctx;
  const runs: string[] = [];
  if (existsSync(join(root, "usr/bin/systemd-sysusers"))) {
    await inRoot(root, "systemd-sysusers", []);
    runs.push("systemd-sysusers.service");
  }
  const usr = statSync(join(root, "usr"), { bigint: true });
  const text =
    "# Written by kiln: the build did what ConditionNeedsUpdate= units would.\n" +
    `TIMESTAMP_NSEC=${usr.mtimeNs}\n`;
  const when = new Date(Number(usr.mtimeMs));
  for (const dir of ["etc", "var"]) {
    const stamp = join(root, dir, ".updated");
    await writeFile(stamp, text);
    // utimes takes seconds as a float: whole seconds are exact, the rest is in TIMESTAMP_NSEC.
    await utimes(stamp, when, when);
  }
  return runs;
}
