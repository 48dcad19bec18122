import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { build } from "../builder/build.js";
import { makeBundle, rootfsOfBuild } from "../deliver/bundle.js";
import { KilnError } from "../util/errors.js";
import { step } from "../util/log.js";
import { printJson } from "./output.js";

interface BundleFlags {
  key: string;
  cert: string;
  keyring?: string;
  output?: string;
  version?: string;
  json?: boolean;
}

export function registerBundle(program: Command): void {
  program
    .command("bundle")
    .argument("<source>", "an A/B spec (built first) or a build output directory")
    .requiredOption("--key <file>", "signing key (PEM file or PKCS#11 URI)")
    .requiredOption("--cert <file>", "signing certificate")
    .option("--keyring <file>", "CA certificate: check the signature chains to it")
    .option("-o, --output <file>", "bundle file (default: NAME-VERSION.raucb beside the build)")
    .option(
      "--version <version>",
      "version in the bundle and in its /etc/kiln/release; devices refuse older ones (default: the spec's version)",
    )
    .option("--json", "print the bundle's manifest as JSON")
    .description("a signed RAUC update bundle (verity format) of an A/B system's root filesystem")
    .action(async (source: string, o: BundleFlags) => {
      if (!existsSync(source)) throw new KilnError("BUNDLE_SOURCE", `${source} does not exist`);
      let buildDir = source;
      if (!statSync(source).isDirectory()) {
        const r = await build(source, { addOutputs: ["directory"] });
        buildDir = r.outDir;
      }
      const { path: rootfs, manifest } = await rootfsOfBuild(buildDir);
      const out =
        o.output ?? join(buildDir, `${manifest.name}-${o.version ?? manifest.version}.raucb`);
      const progress = step(`signed bundle ${out}`);
      const info = await makeBundle({
        rootfs,
        out,
        key: o.key,
        cert: o.cert,
        ...(o.keyring ? { keyring: o.keyring } : {}),
        ...(o.version ? { version: o.version } : {}),
      }).catch((err) => {
        progress.fail();
        throw err;
      });
      progress.done(`${(info.bytes / 2 ** 20).toFixed(1)} MiB`);
      if (o.json) return printJson(info);
      console.log(`${info.path}
  compatible ${info.compatible}
  version    ${info.version}
  format     ${info.format}
  ${info.images.map((i) => `${i.slotClass}: ${i.filename} sha256 ${i.sha256}`).join("\n  ")}`);
    });
}
