import { createReadStream, existsSync, statSync } from "node:fs";
import type { Command } from "commander";
import {
  containerLog,
  isRunning,
  listContainers,
  mustFind,
  readContainer,
  removeContainer,
  statusText,
  stopContainer,
} from "../containers/instances.js";
import { printJson, printTable } from "./output.js";

/** The container verbs besides run: ps, logs, stop, rm. */
export function registerContainers(program: Command): void {
  program
    .command("ps")
    .option("-a, --all", "also containers that have exited")
    .option("--json", "machine-readable output")
    .description("list containers made by kiln run")
    .action((o: { all?: boolean; json?: boolean }) => {
      const list = listContainers()
        .filter((c) => o.all || isRunning(c))
        .map((c) => ({ ...c, running: isRunning(c), statusText: statusText(c) }));
      if (o.json) return printJson(list);
      const rows = [["NAME", "IMAGE", "COMMAND", "CREATED", "STATUS"]];
      for (const c of list) {
        const cmd = c.command.join(" ");
        rows.push([
          c.name,
          c.image,
          JSON.stringify(cmd.length > 30 ? `${cmd.slice(0, 29)}…` : cmd),
          c.created.replace("T", " ").slice(0, 19),
          c.statusText,
        ]);
      }
      printTable(rows);
    });

  program
    .command("logs")
    .argument("<name>", "container name")
    .option("-f, --follow", "keep printing until the container exits")
    .description("print a container's output (kept for runs without -t)")
    .action(async (name: string, o: { follow?: boolean }) => {
      mustFind(name);
      let offset = 0;
      const copy = async () => {
        const file = containerLog(name);
        if (!existsSync(file)) return;
        const size = statSync(file).size;
        if (size <= offset) return;
        const stream = createReadStream(file, { start: offset, end: size - 1 });
        offset = size;
        for await (const chunk of stream) process.stdout.write(chunk as Buffer);
      };
      await copy();
      if (!o.follow) return;
      for (;;) {
        const rec = readContainer(name);
        const live = !!rec && (isRunning(rec) || rec.status === "created");
        await copy();
        if (!live) return;
        await new Promise((r) => setTimeout(r, 200));
      }
    });

  program
    .command("stop")
    .argument("<names...>", "container names")
    .option("-t, --time <seconds>", "seconds to wait for an orderly stop before killing", "10")
    .description("stop running containers (SIGTERM, or a shutdown with --boot; SIGKILL after -t)")
    .action(async (names: string[], o: { time: string }) => {
      for (const n of names) {
        await stopContainer(n, Number(o.time) * 1000);
        console.log(n);
      }
    });

  program
    .command("rm")
    .argument("<names...>", "container names")
    .option("-f, --force", "stop a running container first")
    .description("remove containers: their changes, log and record")
    .action(async (names: string[], o: { force?: boolean }) => {
      for (const n of names) {
        await removeContainer(n, !!o.force);
        console.log(n);
      }
    });
}
