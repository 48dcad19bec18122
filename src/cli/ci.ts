import { readdirSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname, relative, resolve } from "node:path";
import type { Command } from "commander";
import { loadSpec } from "../config/load.js";
import { GITHUB_ASSET_LIMIT, githubWorkflow } from "../publish/github.js";
import { KilnError } from "../util/errors.js";
import { writeFileAtomic } from "../util/fsx.js";
import { log } from "../util/log.js";
import { KILN_VERSION } from "../util/version.js";

export function registerCi(program: Command): void {
  program
    .command("ci")
    .argument("[specs...]", "the specs to build (default: every spec among ./*.yaml)")
    .option("-o, --output <file>", "where the workflow goes", ".github/workflows/kiln.yml")
    .option("--stdout", "print the workflow instead of writing it")
    .option(
      "--install <command>",
      "how the runner gets kiln",
      `npm install -g kiln@${KILN_VERSION}`,
    )
    .option(
      "--asset-limit <bytes>",
      "files bigger than this are split into parts in a release",
      String(GITHUB_ASSET_LIMIT),
    )
    .description(
      "write a GitHub Actions workflow: a build-and-test job per spec, a signed release on tags",
    )
    .action(
      async (
        args: string[],
        o: { output: string; stdout?: boolean; install: string; assetLimit: string },
      ) => {
        const paths = args.length ? args : specsHere();
        const specs = paths.map((p) => ({
          path: relative(process.cwd(), resolve(p)),
          name: loadSpec(p).spec.name,
        }));
        const limit = Number(o.assetLimit);
        if (!Number.isInteger(limit) || limit < 16 * 1024 ** 2)
          throw new KilnError(
            "USAGE",
            "--asset-limit is a whole number of bytes, at least 16 MiB",
            {
              exitCode: 2,
            },
          );
        const text = githubWorkflow(specs, { install: o.install, assetLimitBytes: limit });
        if (o.stdout) {
          process.stdout.write(text);
          return;
        }
        await mkdir(dirname(o.output), { recursive: true });
        await writeFileAtomic(o.output, text);
        log.info(
          `wrote ${o.output}: ${specs.length} build job(s) (${specs.map((s) => s.name).join(", ")}) and a release job`,
        );
      },
    );
}

/** The YAML files in the current directory that are kiln specs (others are skipped). */
function specsHere(): string[] {
  const found: string[] = [];
  for (const f of readdirSync(".")
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()) {
    try {
      loadSpec(f);
      found.push(f);
    } catch {
      log.info(`${f}: not a kiln spec, left out`);
    }
  }
  return found;
}
