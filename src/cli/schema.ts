import type { Command } from "commander";
import { specJsonSchema } from "../spec/jsonschema.js";
import { printJson } from "./output.js";

export function registerSchema(program: Command): void {
  program
    .command("schema")
    .description("print the spec's JSON Schema (committed as schema/spec.json)")
    .action(() => printJson(specJsonSchema()));
}
