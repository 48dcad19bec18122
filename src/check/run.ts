import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Check } from "../config/schema.js";
import { checkScript, DONE_MARK, START_MARK, testUnit } from "../render/checks.js";
import type { Accel } from "../runtime/accel.js";
import {
  blankDisk,
  diskCopy,
  diskRootDir,
  type Ephemeral,
  type Injected,
  mirrorRootInto,
  overlayDir,
  unpackTar,
} from "../runtime/ephemeral.js";
import { startContainer } from "../runtime/nspawn.js";
import { emulatorFault, type Firmware, startVm } from "../runtime/qemu.js";
import { ensureBinfmt, hostArch } from "../util/binfmt.js";
import { evaluate, parseResults } from "./evaluate.js";
import type { TargetReport } from "./junit.js";

export type Target = "nspawn" | Firmware | "netboot" | "iso";

/** The artifacts of a build that kiln test can boot. */
export interface Artifacts {
  rootfs?: string;
  disk?: string;
  /** A mirrored root's disks (disk.layout: raid1), disk 1 (`disk`) first. */
  mirror?: string[];
  netboot?: string;
  iso?: string;
}

/** Every target, the artifact it needs by default, and what it boots. */
export const TARGETS: { target: Target; needs: keyof typeof FROM; boots: string }[] = [
  { target: "nspawn", needs: "rootfs", boots: "a directory, tar or disk in systemd-nspawn" },
  { target: "uefi", needs: "disk", boots: "the disk (or qcow2) in QEMU with OVMF" },
  { target: "bios", needs: "disk", boots: "the disk (or qcow2) in QEMU with SeaBIOS" },
  {
    target: "netboot",
    needs: "netboot",
    boots: "the netboot bundle, served over HTTP as kiln vm --netboot does",
  },
  { target: "iso", needs: "iso", boots: "the installer ISO's live system, the ISO as its CD" },
];

/** The output formats each artifact is taken from, preferred first. */
const FROM: Record<Exclude<keyof Artifacts, "mirror">, string[]> = {
  rootfs: ["directory", "tar"],
  disk: ["disk", "qcow2"],
  netboot: ["netboot"],
  iso: ["iso"],
};

/** Targets a machine of each architecture lacks: arm64 has no BIOS. */
const NOT_ON: Record<string, Target[]> = { arm64: ["bios"] };

/**
 * The targets these artifacts allow on `arch`, in TARGETS order. Another
 * architecture's image is not booted in nspawn unless asked for (`--on`):
 * its systemd runs there through qemu-user on the host's kernel, where
 * seccomp-sandboxed services (systemd-hostnamed) fail for reasons that are
 * not the image's.
 */
export function targetsFor(a: Artifacts, arch = "amd64"): Target[] {
  const foreign = arch !== hostArch();
  return TARGETS.filter(
    (t) => a[t.needs] && !NOT_ON[arch]?.includes(t.target) && !(foreign && t.target === "nspawn"),
  ).map((t) => t.target);
}

/** Why `target` cannot boot `arch`, if it cannot. */
export function unbootable(target: Target, arch = "amd64"): string | undefined {
  return NOT_ON[arch]?.includes(target) ? `${arch} machines have no ${target}` : undefined;
}

export interface TestOptions {
  /** The artifact's Debian architecture (default amd64): which QEMU machine boots it. */
  arch?: string;
  bootTimeoutMs: number;
  checksTimeoutMs: number;
  accel: Accel | "auto";
  /**
   * A mirrored root's disks to boot with, in drive order: members by number
   * (from 1) or "blank" for an empty replacement disk; default every member.
   */
  disks?: DiskChoice[];
  /** A NoCloud seed (directory or ISO) attached to VM targets. */
  seed?: string;
  onConsole?: (target: Target, text: string) => void;
  /** Told when a target is booted again after an emulator fault (see emulatorFault). */
  onRetry?: (target: Target, why: string) => void;
}

/** What the test boot carries in addition to the artifact: the checks and the unit that runs them. */
export function testInjection(checks: Check[]): Injected[] {
  return [
    { path: "/usr/lib/kiln-test/checks.sh", content: checkScript(checks), mode: 0o755 },
    { path: "/etc/systemd/system/kiln-test.service", content: testUnit() },
    {
      path: "/etc/systemd/system/multi-user.target.wants/kiln-test.service",
      linkTo: "/etc/systemd/system/kiln-test.service",
    },
  ];
}

export type DiskChoice = number | "blank";

type Report = TargetReport & { accel?: Accel; emulatorFault?: string; retried?: string };

/**
 * Boot one target from a throw-away copy, wait until ready, collect the check
 * results, end everything. A boot that failed by the emulator's fault is
 * retried once (see emulatorFault), and the report says so.
 */
export async function runTarget(
  target: Target,
  artifact: Artifacts,
  checks: Check[],
  o: TestOptions,
): Promise<Report> {
  const first = await bootOnce(target, artifact, checks, o);
  if (!first.emulatorFault) return first;
  o.onRetry?.(target, first.emulatorFault);
  const second = await bootOnce(target, artifact, checks, o);
  return { ...second, retried: `${first.emulatorFault}; booted again` };
}

async function bootOnce(
  target: Target,
  artifact: Artifacts,
  checks: Check[],
  o: TestOptions,
): Promise<Report> {
  const inject = testInjection(checks);
  let eph: Ephemeral | undefined;
  let unpacked: Ephemeral | undefined;
  try {
    let guest: {
      watcher: import("../runtime/console.js").ConsoleWatcher;
      proc: { child: { signalCode: NodeJS.Signals | null } };
      stop(): Promise<void>;
    };
    let accel: Accel | undefined;
    if (target === "nspawn") {
      if (o.arch) await ensureBinfmt(o.arch);
      let dir = artifact.rootfs;
      if (dir && !statSync(dir).isDirectory()) {
        unpacked = await unpackTar(dir);
        dir = unpacked.path;
      }
      if (dir) eph = await overlayDir(dir, inject);
      else if (artifact.disk) eph = await diskRootDir(artifact.disk, inject);
      else throw new Error("nspawn needs a directory, tar or disk artifact");
      guest = await startContainer({
        dir: eph.path,
        persist: true,
        // A network namespace of its own (loopback only): the guest's sshd or
        // web server cannot clash with the host's ports, nor checks reach the host's.
        extraArgs: ["--private-network"],
        onConsole: (t) => o.onConsole?.(target, t),
      });
    } else if (target === "netboot" || target === "iso") {
      // Nothing to copy: the bundle and the ISO are only read; the checks go in through the initrd.
      const from = artifact[target];
      if (!from)
        throw new Error(`${target} needs a ${target} artifact (add \`${target}\` to outputs)`);
      const vm = await startVm({
        image: "",
        ...(o.arch ? { arch: o.arch } : {}),
        firmware: "bios",
        accel: o.accel,
        ...(target === "netboot" ? { netboot: from } : { iso: from }),
        inject,
        ...(o.seed ? { seed: o.seed } : {}),
        onConsole: (t) => o.onConsole?.(target, t),
      });
      accel = vm.accel;
      guest = vm;
    } else {
      if (!artifact.disk)
        throw new Error(`${target} needs a disk artifact (add \`disk\` or \`qcow2\` to outputs)`);
      const disks = await vmDisks(artifact, inject, o.disks);
      eph = disks.eph;
      const vm = await startVm({
        image: disks.paths[0]!,
        disks: disks.paths.slice(1),
        ...(o.arch ? { arch: o.arch } : {}),
        firmware: target,
        accel: o.accel,
        ...(o.seed ? { seed: o.seed } : {}),
        onConsole: (t) => o.onConsole?.(target, t),
      });
      accel = vm.accel;
      guest = vm;
    }
    try {
      const state = await guest.watcher.wait(o.bootTimeoutMs);
      if (state.state !== "ready") {
        const reason = state.state === "failed" ? state.reason : undefined;
        const fault = target === "nspawn" ? undefined : emulatorFault(guest.proc, reason);
        return {
          ...(fault ? { emulatorFault: fault } : {}),
          target,
          ready: false,
          readySeconds: null,
          bootError: `${state.state === "failed" ? state.reason : "not ready"}\n--- last console lines ---\n${guest.watcher.tail(50)}`,
          results: [],
          ...(accel ? { accel } : {}),
        };
      }
      const finished =
        !checks.length || (await guest.watcher.waitForText(DONE_MARK, o.checksTimeoutMs));
      const { results } = parseResults(guest.watcher.output);
      return {
        target,
        ready: true,
        readySeconds: Math.round(state.seconds * 10) / 10,
        breakdown: guest.watcher.breakdown(state.seconds),
        ...(finished
          ? {}
          : {
              checksError: checksUnfinished(
                guest.watcher.output,
                results.length,
                o.checksTimeoutMs,
                guest.watcher.tail(40),
              ),
            }),
        results: evaluate(checks, results),
        ...(accel ? { accel } : {}),
      };
    } finally {
      await guest.stop();
    }
  } catch (err) {
    return {
      target,
      ready: false,
      readySeconds: null,
      bootError: err instanceof Error ? err.message : String(err),
      results: [],
    };
  } finally {
    await eph?.dispose();
    await unpacked?.dispose();
  }
}

/** Why the checks did not all come back: never started (the unit's target not reached), or stuck. */
export function checksUnfinished(
  consoleText: string,
  reported: number,
  timeoutMs: number,
  tail: string,
): string {
  const s = Math.round(timeoutMs / 1000);
  const why = !consoleText.includes(START_MARK)
    ? `the check unit had not started ${s} s after ready (kiln-test.service runs after multi-user.target: a unit before it is still starting?)`
    : `the checks started but ${reported ? `stopped after ${reported} result(s)` : "none reported"} within ${s} s`;
  return `${why}\n--- last console lines ---\n${tail}`;
}

/**
 * Throw-away copies of the disks a VM target boots: the one disk with the
 * checks injected, or the chosen disks of a mirrored root, the checks
 * injected into the first and its root mirrored into the others (a
 * member's filesystem must be the same bytes on each), blank ones as big
 * as the members.
 */
async function vmDisks(
  artifact: Artifacts,
  inject: Injected[],
  choice: DiskChoice[] | undefined,
): Promise<{ paths: string[]; eph: Ephemeral }> {
  const members = artifact.mirror ?? (artifact.disk ? [artifact.disk] : []);
  const want = choice ?? members.map((_, i) => i + 1);
  for (const c of want)
    if (c !== "blank" && !members[c - 1])
      throw new Error(
        `there is no disk ${c}: the build has ${members.length} disk${members.length === 1 ? "" : "s"}`,
      );
  if (!want.some((c) => c !== "blank"))
    throw new Error("boot at least one of the build's disks besides blank ones");
  const made: Ephemeral[] = [];
  const eph: Ephemeral = {
    path: "",
    dispose: async () => {
      for (const e of made.reverse()) await e.dispose();
    },
  };
  try {
    let first: string | undefined;
    const paths: string[] = [];
    for (const c of want) {
      if (c === "blank") {
        paths.push("");
        continue;
      }
      const copy = await diskCopy(members[c - 1]!, first ? [] : inject);
      made.push(copy);
      if (first) await mirrorRootInto(first, copy.path);
      else first = copy.path;
      paths.push(copy.path);
    }
    const size = statSync(first!).size;
    for (const [i, p] of paths.entries()) {
      if (p) continue;
      const blank = await blankDisk(size);
      made.push(blank);
      paths[i] = blank.path;
    }
    return { paths, eph };
  } catch (err) {
    await eph.dispose();
    throw err;
  }
}

/** Which artifacts of a build output directory each target boots. */
export function artifactsOf(
  dir: string,
  manifest: { name: string; artifacts: { format: string; path: string; disk?: number }[] },
): Artifacts {
  const found: Artifacts = {};
  for (const [kind, formats] of Object.entries(FROM) as [keyof typeof FROM, string[]][]) {
    for (const f of formats) {
      const a = manifest.artifacts.find((x) => x.format === f);
      if (a && existsSync(join(dir, a.path))) {
        found[kind] = join(dir, a.path);
        // A mirrored root: every disk of the format, by number.
        const disks = manifest.artifacts
          .filter((x) => x.format === f && x.disk)
          .sort((x, y) => (x.disk ?? 0) - (y.disk ?? 0));
        if (kind === "disk" && disks.length > 1) found.mirror = disks.map((x) => join(dir, x.path));
        break;
      }
    }
  }
  return found;
}
