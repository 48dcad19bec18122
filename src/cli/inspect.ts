import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { readManifest } from "../artifact/manifest.js";
import { inspectAddon } from "../builder/steps/addons.js";
import { bundleInfo } from "../deliver/bundle.js";
import { listPackages } from "../distro/packages.js";
import { KilnError } from "../util/errors.js";
import { mib, treeBytes } from "../util/fsx.js";
import { printJson } from "./output.js";

export function registerInspect(program: Command): void {
  program
    .command("inspect")
    .argument(
      "<dir>",
      "a build output directory, an update bundle (.raucb), or a portable/sysext image (.raw)",
    )
    .option("--json", "machine-readable output")
    .option("--keyring <file>", "bundles: verify the signature against this CA certificate")
    .description(
      "package count, /usr size, largest packages and artifacts of a build; a bundle's manifest",
    )
    .action(async (dir: string, o: { json?: boolean; keyring?: string }) => {
      if (dir.endsWith(".raucb")) return inspectBundle(dir, o);
      if (dir.endsWith(".raw") && existsSync(dir) && !existsSync(join(dir, "manifest.json"))) {
        const a = await inspectAddon(dir);
        if (o.json) return printJson(a);
        console.log(`${a.kind} ${a.name} ${a.version} (${a.distribution ?? "?"}), ${mib(a.bytes)}`);
        console.log(`sha256 ${a.sha256}`);
        if (a.units.length) console.log(`units: ${a.units.join(" ")}`);
        return;
      }
      const manifest = await readManifest(dir);
      const rootfs = join(dir, `${manifest.name}.rootfs`);
      const pkgs = existsSync(rootfs) ? await listPackages(rootfs) : undefined;
      const usr = existsSync(rootfs) ? await treeBytes(join(rootfs, "usr")) : undefined;
      const largest = pkgs
        ? [...pkgs]
            .sort((a, b) => b.installedKiB - a.installedKiB)
            .slice(0, 10)
            .map((p) => ({ name: p.name, bytes: p.installedKiB * 1024 }))
        : undefined;
      const report = {
        name: manifest.name,
        version: manifest.version,
        distribution: manifest.distribution,
        kernel: manifest.kernel,
        packageCount: manifest.packages.length,
        installedBytes: manifest.sizes.installed,
        usrBytes: usr ?? null,
        largestPackages: largest ?? null,
        artifacts: manifest.artifacts,
      };
      if (o.json) return printJson(report);
      console.log(
        `${report.name} ${report.version} — ${report.distribution.id} ${report.distribution.release} ${report.distribution.architecture}, kernel ${report.kernel}`,
      );
      console.log(
        `packages: ${report.packageCount}   installed: ${mib(report.installedBytes)}${usr !== undefined ? `   /usr: ${mib(usr)}` : ""}`,
      );
      if (largest) {
        console.log("largest packages:");
        for (const p of largest) console.log(`  ${mib(p.bytes).padStart(10)}  ${p.name}`);
      }
      console.log("artifacts:");
      for (const a of report.artifacts)
        console.log(
          `  ${a.format.padEnd(10)} ${a.path.padEnd(24)} ${mib(a.size).padStart(10)}  ${a.sha256.slice(0, 16)}`,
        );
    });
}

async function inspectBundle(path: string, o: { json?: boolean; keyring?: string }) {
  if (!existsSync(path)) throw new KilnError("INSPECT_NO_BUNDLE", `${path} does not exist`);
  const info = await bundleInfo(path, o.keyring);
  if (o.json) return printJson(info);
  console.log(`bundle      ${info.path} (${(info.bytes / 2 ** 20).toFixed(1)} MiB, ${info.format})
compatible  ${info.compatible}
version     ${info.version}
built       ${info.build ?? "-"}
signature   ${info.verified ? `verified against ${o.keyring}` : "not checked (pass --keyring CA)"}`);
  for (const i of info.images)
    console.log(
      `image       ${i.slotClass}: ${i.filename}, ${(i.bytes / 2 ** 20).toFixed(1)} MiB, sha256 ${i.sha256}`,
    );
}
