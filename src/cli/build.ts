import type { Command } from "commander";
import { build, planFor } from "../builder/build.js";
import { lockHash, lockPath, readLock } from "../distro/lock.js";
import { mirrorArgs } from "../distro/mmdebstrap.js";
import { requireTools } from "../util/doctor.js";
import { log } from "../util/log.js";
import { printJson } from "./output.js";

export function registerBuild(program: Command): void {
  program
    .command("build")
    .argument("<spec>", "spec file (YAML)")
    .option("-o, --output <dir>", "output directory (default: out/NAME)")
    .option("--plan", "print the steps and their cache keys; needs neither root nor network")
    .option("--refresh", "bootstrap the root filesystem again even if it is cached")
    .option("--json", "print the result (or plan) as JSON on stdout")
    .description("build the artifacts a spec asks for")
    .action(
      async (
        specPath: string,
        o: { output?: string; plan?: boolean; refresh?: boolean; json?: boolean },
      ) => {
        if (o.plan) {
          const { plan, loaded } = planFor(specPath);
          const lock = readLock(lockPath(loaded.files[0]!));
          if (o.json)
            return printJson({
              ...plan,
              ...(lock ? { lock: { file: lockPath(loaded.files[0]!), hash: lockHash(lock) } } : {}),
            });
          console.log(`plan for ${plan.name} (spec ${plan.specHash})`);
          if (lock)
            console.log(
              `  root from ${lockPath(loaded.files[0]!)} (${lock.packages.length} packages, SOURCE_DATE_EPOCH ${lock.sourceDateEpoch}): no mirror is asked once it is cached`,
            );
          for (const s of plan.steps)
            console.log(
              `  ${s.id.padEnd(10)} ${s.key}${s.cached ? " (cached by key)" : ""}  ${s.title}${s.reuses ? `; reuses ${s.reuses}` : ""}`,
            );
          if (plan.base) return;
          console.log(
            `\nmmdebstrap ${plan.recipe.args.join(" ")} ${plan.recipe.release} DIR ${mirrorArgs(
              plan.recipe,
            )
              .map((l) => `"${l}"`)
              .join(" ")}`,
          );
          return;
        }
        await requireTools([
          "mmdebstrap",
          "tar",
          "zstd",
          "sfdisk",
          "mkfs.ext4",
          "mkfs.vfat",
          "mcopy",
          "grub-mkimage",
          "qemu-img",
        ]);
        log.info(`building ${specPath}`);
        const r = await build(specPath, {
          ...(o.output ? { outDir: o.output } : {}),
          refresh: !!o.refresh,
        });
        if (o.json) {
          printJson({
            ok: true,
            outDir: r.outDir,
            upToDate: !!r.upToDate,
            manifest: r.manifest,
            credentials: r.credentials.length ? `${r.outDir}/credentials` : null,
          });
          return;
        }
        console.log(
          `\n${r.upToDate ? "up to date (kept)" : "built"} ${r.manifest.name} in ${r.outDir}`,
        );
        for (const a of r.manifest.artifacts)
          console.log(`  ${a.format.padEnd(10)} ${a.path}  ${(a.size / 1048576).toFixed(1)} MiB`);
        if (r.credentials.length) {
          // Never printed: terminals end up in CI logs and scrollback. The 0600 file is the only copy.
          console.log(
            `\ngenerated passwords (${r.credentials.map((c) => c.user).join(", ")}): ${r.outDir}/credentials (mode 0600)`,
          );
        }
      },
    );
}
