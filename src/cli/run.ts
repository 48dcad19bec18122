import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import {
  claimName,
  containerDir,
  readContainer,
  removeContainer,
  writeContainer,
} from "../containers/instances.js";
import { defaultName, prepareRun, type RunOptions, runContainer } from "../containers/run.js";
import { parsePlatform, parseRef, refText } from "../containers/store.js";
import { KilnError } from "../util/errors.js";
import { spawnDetached } from "../util/exec.js";
import { running } from "../util/proc.js";

interface RunFlags {
  interactive?: boolean;
  tty?: boolean;
  rm?: boolean;
  name?: string;
  env: string[];
  volume: string[];
  workdir?: string;
  boot?: boolean;
  detach?: boolean;
  platform?: string;
}

const collect = (v: string, prev: string[]) => [...prev, v];

export function registerRun(program: Command): void {
  program
    .command("run")
    .argument("<image>", "a stored image, NAME[:TAG]")
    .argument("[command...]", "command and arguments (default /bin/bash)")
    .option("-i, --interactive", "keep stdin open")
    .option("-t, --tty", "a pseudo-terminal")
    .option("--rm", "remove the container when it exits")
    .option("-d, --detach", "run in the background and print the container's name")
    .option("--name <name>", "container name (also its host name)")
    .option("-e, --env <K=V>", "environment variable (repeatable)", collect, [])
    .option("-v, --volume <HOST:GUEST[:ro]>", "bind mount (repeatable)", collect, [])
    .option("-w, --workdir <dir>", "working directory inside the container")
    .option("--boot", "run systemd as PID 1 and the command as a unit")
    .option(
      "--platform <os/arch>",
      "linux/arm64 or linux/amd64: the stored image of that architecture (another than the host's runs through qemu-user)",
    )
    .description("run a command in a systemd-nspawn container on an overlay of a stored image")
    .action(async (image: string, command: string[], o: RunFlags) => {
      const arch = parsePlatform(o.platform);
      const opts: RunOptions = {
        image: { ...parseRef(image), ...(arch ? { arch } : {}) },
        command,
        interactive: !!o.interactive,
        tty: !!o.tty,
        ...(o.name ? { name: o.name } : {}),
        env: o.env,
        volumes: o.volume,
        ...(o.workdir ? { workdir: o.workdir } : {}),
        boot: !!o.boot,
        rm: !!o.rm,
      };
      if (process.env[SUPERVISOR]) {
        process.exitCode = await runContainer({ ...opts, detached: true, claimed: true });
        return;
      }
      if (o.detach) return detach(opts);
      process.exitCode = await runContainer(opts);
    });
}

const TAKES_VALUE = new Set([
  "--name",
  "-e",
  "--env",
  "-v",
  "--volume",
  "-w",
  "--workdir",
  "--platform",
]);

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

const SUPERVISOR = "KILN_RUN_SUPERVISOR";

/**
 * `run -d`: check everything a user can get wrong here and now, claim the
 * name, then leave the container to a kiln process of its own (a new
 * session, so it outlives this one) and print the name once it runs.
 */
async function detach(o: RunOptions): Promise<void> {
  if (o.tty || o.interactive)
    throw new KilnError("RUN_DETACH", "kiln run -d takes no terminal or stdin (-t, -i)", {
      exitCode: 125,
    });
  const { command } = prepareRun(o);
  const name = o.name ?? defaultName(o.image);
  await claimName(name);
  await writeContainer({
    name,
    image: refText(o.image),
    command,
    boot: !!o.boot,
    created: new Date().toISOString(),
    status: "created",
    autoRemove: !!o.rm,
  });
  const args = [
    process.argv[1]!,
    "run",
    "--name",
    name,
    ...(o.rm ? ["--rm"] : []),
    ...(o.boot ? ["--boot"] : []),
    ...(o.env ?? []).flatMap((e) => ["-e", e.includes("=") ? e : `${e}=${process.env[e] ?? ""}`]),
    ...(o.volumes ?? []).flatMap((v) => ["-v", absoluteVolume(v)]),
    ...(o.workdir ? ["-w", o.workdir] : []),
    refText(o.image),
    "--",
    ...command,
  ];
  const kilnLog = containerDir(name, "kiln.log");
  const pid = spawnDetached(process.execPath, args, {
    logFile: kilnLog,
    env: { [SUPERVISOR]: "1" },
  });
  const until = Date.now() + 30_000;
  for (;;) {
    const rec = readContainer(name);
    // Started, or already done (with --rm, already gone).
    if (rec?.nspawnPid || rec?.status === "exited" || !existsSync(containerDir(name))) break;
    if (!running(pid) || Date.now() > until) {
      const said = existsSync(kilnLog) ? readFileSync(kilnLog, "utf8").trim() : "";
      await removeContainer(name, true).catch(() => {});
      throw new KilnError("RUN_DETACH", `the container did not start${said ? `:\n${said}` : ""}`, {
        exitCode: 125,
      });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  console.log(name);
}

/** The supervisor starts in the same directory, but a relative volume should not depend on that. */
function absoluteVolume(v: string): string {
  const [host, ...rest] = v.split(":");
  return [resolve(host!), ...rest].join(":");
}
