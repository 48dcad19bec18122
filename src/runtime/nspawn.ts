import { existsSync, statSync } from "node:fs";
import { KilnError } from "../util/errors.js";
import { quoteCommand, type Started, start } from "../util/exec.js";
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

/** nspawn arguments: no registration (there may be no system bus), the unit kept as is. */
export function nspawnArgs(o: ContainerOptions): string[] {
  return [
    "--register=no",
    "--keep-unit",
    "-q",
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
  void proc.exited.then((code) => watcher.exited(code));
  return { watcher, proc, stop: () => proc.stop(8000) };
}
