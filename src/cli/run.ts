import type { Command } from "commander";
import { runContainer } from "../containers/run.js";
import { parseRef } from "../containers/store.js";

interface RunFlags {
  interactive?: boolean;
  tty?: boolean;
  rm?: boolean;
  name?: string;
  env: string[];
  volume: string[];
  workdir?: string;
  boot?: boolean;
}

const collect = (v: string, prev: string[]) => [...prev, v];

export function registerRun(program: Command): void {
  program
    .command("run")
    .argument("<image>", "a stored image, NAME[:TAG]")
    .argument("[command...]", "command and arguments (default /bin/bash)")
    .option("-i, --interactive", "keep stdin open")
    .option("-t, --tty", "a pseudo-terminal")
    .option("--rm", "remove the container when it exits (kiln keeps none yet: always on)")
    .option("--name <name>", "container name (also its host name)")
    .option("-e, --env <K=V>", "environment variable (repeatable)", collect, [])
    .option("-v, --volume <HOST:GUEST[:ro]>", "bind mount (repeatable)", collect, [])
    .option("-w, --workdir <dir>", "working directory inside the container")
    .option("--boot", "run systemd as PID 1 and the command as a unit")
    .description("run a command in a throw-away systemd-nspawn container of a stored image")
    .action(async (image: string, command: string[], o: RunFlags) => {
      process.exitCode = await runContainer({
        image: parseRef(image),
        command,
        interactive: !!o.interactive,
        tty: !!o.tty,
        ...(o.name ? { name: o.name } : {}),
        env: o.env,
        volumes: o.volume,
        ...(o.workdir ? { workdir: o.workdir } : {}),
        boot: !!o.boot,
      });
    });
}

const TAKES_VALUE = new Set(["--name", "-e", "--env", "-v", "--volume", "-w", "--workdir"]);

/**
 * Docker's rule: everything after the image belongs to the command
 * (`kiln run debian sh -c 'exit 3'`). Commander would read `-c` as an option
 * of `run`, so a `--` goes in right after the image.
 */
export function runArgv(argv: string[]): string[] {
  const at = argv.indexOf("run", 2);
  if (at < 0 || argv.slice(2, at).some((a) => !a.startsWith("-"))) return argv;
  for (let i = at + 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") return argv;
    if (TAKES_VALUE.has(a)) {
      i++;
      continue;
    }
    if (a.startsWith("-")) continue;
    if (argv[i + 1] === "--") return argv;
    return [...argv.slice(0, i + 1), "--", ...argv.slice(i + 1)];
  }
  return argv;
}
