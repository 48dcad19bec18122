import { join, resolve } from "node:path";
import type { Command } from "commander";
import { loadSpec } from "../config/load.js";
import { SEED_FORMATS, type SeedFormat, writeSeed } from "../seed/write.js";
import { KilnError } from "../util/errors.js";
import { printJson } from "./output.js";

export function registerSeed(program: Command): void {
  program
    .command("seed")
    .argument("<spec>", "spec file (YAML)")
    .option("--format <format>", SEED_FORMATS.join(", "), "nocloud-iso")
    .option("-o, --output <dir>", "output directory (default: out/NAME-seed/FORMAT)")
    .option("--json", "print what was written as JSON")
    .description(
      "first-boot configuration from a spec: a cloud-init NoCloud seed (ISO or directory), Subiquity autoinstall user-data, or an Ignition config; validated before it is written",
    )
    .action(async (specPath: string, o: { format: string; output?: string; json?: boolean }) => {
      if (!(SEED_FORMATS as readonly string[]).includes(o.format))
        throw new KilnError("USAGE", `--format is one of ${SEED_FORMATS.join(", ")}`, {
          exitCode: 2,
        });
      const { spec } = loadSpec(specPath);
      const out = resolve(o.output ?? join("out", `${spec.name}-seed`, o.format));
      const r = await writeSeed(spec, o.format as SeedFormat, out);
      if (o.json)
        return printJson({
          ok: true,
          format: o.format,
          outDir: r.outDir,
          files: r.files,
          credentials: r.credentials.length ? join(r.outDir, "credentials") : null,
        });
      console.log(`${o.format} seed for ${spec.name} in ${r.outDir}: ${r.files.join(", ")}`);
      if (r.credentials.length)
        console.log(
          `generated passwords (${r.credentials.map((c) => c.user).join(", ")}): ${join(r.outDir, "credentials")} (mode 0600)`,
        );
    });
}
