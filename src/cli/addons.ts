import { resolve } from "node:path";
import type { Command } from "commander";
import { signInventory } from "../deliver/addonlist.js";
import { printJson } from "./output.js";

export function registerAddons(program: Command): void {
  const addons = program.command("addons").description("per-host add-ons for kiln-agent");
  addons
    .command("sign")
    .argument("<inventory>", "the inventory kiln serve hands add-ons out from")
    .requiredOption("--key <file>", "the add-on signing key (`kiln keys addons` makes one)")
    .option(
      "-o, --out <dir>",
      "where addons.list and addons.list.sig go (default: beside the inventory)",
    )
    .option("--serial <n>", "the list's serial (default: UTC time, above the previous list's)")
    .option("--json", "print the result as JSON")
    .description("sign what the inventory hands out: the list kiln-agent verifies before it acts")
    .action(
      async (
        inventory: string,
        o: { key: string; out?: string; serial?: string; json?: boolean },
      ) => {
        const r = await signInventory(resolve(inventory), resolve(o.key), {
          ...(o.out ? { outDir: resolve(o.out) } : {}),
          ...(o.serial ? { serial: o.serial } : {}),
        });
        if (o.json) return printJson(r);
        console.log(`signed ${r.entries} add-ons, serial ${r.serial}:\n  ${r.list}\n  ${r.sig}`);
      },
    );
}
