import type { Command } from "commander";
import { specJsonSchema } from "../config/jsonschema.js";
import { inventoryJsonSchema } from "../deliver/inventory.js";
import { printJson } from "./output.js";

export function registerSchema(program: Command): void {
  program
    .command("schema")
    .option("--inventory", "the inventory's schema instead (schema/inventory.json)")
    .description("print the spec's JSON Schema (committed as schema/spec.json)")
    .action(async (o: { inventory?: boolean }) =>
      printJson(o.inventory ? await inventoryJsonSchema() : specJsonSchema()),
    );
}
