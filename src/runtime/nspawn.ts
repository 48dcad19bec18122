import { existsSync, statSync } from "node:fs";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { quoteCommand, type Started, start } from "../util/exec.js";
import { commOf, descendants, running, signal, waitGone } from "../util/proc.js";
import { ConsoleWatcher } from "./console.js";

export interface ContainerOptions {
  dir: string;
  /** Keep changes (default: a throw-away overlay over the directory). */
  persist?: boolean;
  onConsole?: (text: string) => void;
  extraArgs?: string[];
}

export interface Container {
  watcher: ConsoleWatcher;
  proc: Started;
  stop(): Promise<void>;
}

/**
 * What every kiln nspawn call starts with: no registration with machined
 * (hosts may have no system bus, nor systemd as PID 1), the caller's unit
 * kept as is, and nspawn's own chatter off.
 */
export const NSPAWN_BASE = ["--register=no", "--keep-unit", "-q"] as const;

/** nspawn arguments for booting a root filesystem directory. */
export function nspawnArgs(o: ContainerOptions): string[] {
  return [
    ...NSPAWN_BASE,
    ...(o.persist ? [] : ["--volatile=overlay"]),
    ...(o.extraArgs ?? []),
    "-D",
    o.dir,
    "-b",
  ];
}

/**
 * Boot a root filesystem directory with systemd inside. systemd only writes
 * its console to a terminal, so nspawn runs under `script`, which gives it one.
 */
export async function startContainer(o: ContainerOptions): Promise<Container> {
  if (!existsSync(o.dir) || !statSync(o.dir).isDirectory())
    throw new KilnError("BOOT_NO_DIR", `${o.dir} is not a directory`);
  if (!existsSync(`${o.dir}/sbin/init`) && !existsSync(`${o.dir}/lib/systemd/systemd`)) {
    throw new KilnError("BOOT_NO_INIT", `${o.dir} has no init system`, {
      hint: "is systemd-sysv in packages?",
    });
  }
  const watcher = new ConsoleWatcher();
  const proc = await start(
    "script",
    ["-qfec", quoteCommand("systemd-nspawn", nspawnArgs(o)), "/dev/null"],
    {
      onData: (t) => {
        watcher.feed(t);
        o.onConsole?.(t);
      },
    },
  );
  void proc.exited.then((code) => watcher.exited(code, proc.child.signalCode));
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= stopTree(proc, 8000);
    return stopping;
  };
  const drop = onCleanup("container", stop);
  void proc.exited.then(() => stop().then(drop));
  return { watcher, proc, stop };
}

/**
 * Stop nspawn and everything below it. `script` may exit before nspawn has
 * finished, so stopping `script` alone can leave nspawn (and with it the
 * container's mounts and loop devices) behind for seconds, or for good if it
 * was killed: SIGTERM goes to nspawn itself (an orderly poweroff of the
 * container), and kiln waits for the whole tree, killing what outlives the grace.
 */
async function stopTree(proc: Started, graceMs: number): Promise<void> {
  const pid = proc.child.pid;
  if (pid === undefined) return;
  const tree = [pid, ...descendants(pid)];
  const nspawn = tree.filter((p) => commOf(p) === "systemd-nspawn");
  if (tree.some(running)) {
    signal(nspawn.length > 0 ? nspawn : [pid], "SIGTERM");
    if (!(await waitGone(tree, graceMs))) {
      // The container's init dies last: killing it takes its whole PID namespace.
      signal([...tree, ...descendants(pid)], "SIGKILL");
      await waitGone(tree, 5000);
    }
  }
  await proc.exited;
}
