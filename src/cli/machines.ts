import type { Command } from "commander";
import { Discovery, defaultDb } from "../deliver/discovery.js";

export function registerMachines(program: Command): void {
  program
    .command("machines")
    .option("--db <file>", "discovery database", defaultDb())
    .option("--json", "machine-readable output")
    .description("machines that asked `kiln serve` for a boot script, with the group they matched")
    .action(async (o: { db: string; json?: boolean }) => {
      const list = (await Discovery.open(o.db)).list();
      if (!o.json && !list.length) return console.log("no machines have asked yet");
      const text = o.json
        ? `${JSON.stringify(list, null, 2)}\n`
        : [
            `${"MACHINE".padEnd(20)} ${"GROUP".padEnd(16)} ${"PROFILE".padEnd(12)} ${"SERIAL".padEnd(14)} LAST SEEN`,
            ...list.map(
              (m) =>
                `${m.id.padEnd(20)} ${(m.group ?? "(unmatched)").padEnd(16)} ${(m.profile ?? "-").padEnd(12)} ${printable(m.facts.serial ?? "-").padEnd(14)} ${m.lastSeen}`,
            ),
            "",
          ].join("\n");
      // bin/kiln.js waits for stdout to drain before it exits, so a long listing arrives whole.
      process.stdout.write(text);
    });
}

/** A client-chosen value for a terminal: anything but printable ASCII becomes "?". */
function printable(s: string): string {
  return s.replace(/[^ -~]/g, "?");
}
