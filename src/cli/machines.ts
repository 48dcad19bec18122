import type { Command } from "commander";
import { Discovery, defaultDb } from "../deliver/discovery.js";
import { printJson } from "./output.js";

export function registerMachines(program: Command): void {
  program
    .command("machines")
    .option("--db <file>", "discovery database", defaultDb())
    .option("--json", "machine-readable output")
    .description("machines that asked `kiln serve` for a boot script, with the group they matched")
    .action(async (o: { db: string; json?: boolean }) => {
      const list = (await Discovery.open(o.db)).list();
      if (o.json) return printJson(list);
      if (!list.length) return console.log("no machines have asked yet");
      console.log(
        `${"MACHINE".padEnd(20)} ${"GROUP".padEnd(16)} ${"PROFILE".padEnd(12)} ${"SERIAL".padEnd(14)} LAST SEEN`,
      );
      for (const m of list) {
        console.log(
          `${m.id.padEnd(20)} ${(m.group ?? "(unmatched)").padEnd(16)} ${(m.profile ?? "-").padEnd(12)} ${(m.facts.serial ?? "-").padEnd(14)} ${m.lastSeen}`,
        );
      }
    });
}
