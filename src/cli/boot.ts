import { existsSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { nspawnArgs, startContainer } from "../runtime/nspawn.js";
import { bootFailure, bootUntilReady } from "../runtime/ready.js";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { printJson } from "./output.js";

export function registerBoot(program: Command): void {
  program
    .command("boot")
    .argument("<artifact>", "a root filesystem directory or a .tar/.tar.zst")
    .option("--persist", "keep changes made while running (default: thrown away)")
    .option("--until-ready", "boot, report time to ready, shut down (exit 2 if not ready)")
    .option("--timeout <seconds>", "with --until-ready", "120")
    .option("--json", "with --until-ready: the report as JSON")
    .description("boot an artifact in systemd-nspawn")
    .action(
      async (
        artifact: string,
        o: { persist?: boolean; untilReady?: boolean; timeout: string; json?: boolean },
      ) => {
        let dir = artifact;
        let scratch: string | undefined;
        if (!existsSync(artifact))
          throw new KilnError("BOOT_NO_ARTIFACT", `${artifact} does not exist`);
        if (!statSync(artifact).isDirectory()) {
          if (!/\.tar(\.zst|\.gz|\.xz)?$/.test(artifact)) {
            throw new KilnError(
              "BOOT_FORMAT",
              `kiln boot takes a directory or a tar; ${artifact} is neither`,
              { hint: "boot disk images with `kiln vm`" },
            );
          }
          scratch = await mkdtemp(join(tmpdir(), "kiln-boot-"));
          onCleanup(`unpacked ${artifact}`, () => rm(scratch!, { recursive: true, force: true }));
          await exec("tar", ["--numeric-owner", "-C", scratch, "-xf", artifact]);
          dir = scratch;
        }
        try {
          if (!o.untilReady) {
            await exec(
              "systemd-nspawn",
              nspawnArgs({ dir, ...(o.persist ? { persist: true } : {}) }),
              { inherit: true, okCodes: [0, 130, 133, 143] },
            );
            return;
          }
          const c = await startContainer({ dir, ...(o.persist ? { persist: true } : {}) });
          const r = await bootUntilReady("nspawn", c, Number(o.timeout) * 1000);
          if (o.json) printJson(r);
          else if (r.ready) console.log(`nspawn: ready in ${r.seconds}s`);
          if (!r.ready) {
            // With --json the report (reason and console tail included) is the whole answer.
            if (o.json) process.exitCode = 2;
            else throw bootFailure(r);
          }
        } finally {
          if (scratch) await rm(scratch, { recursive: true, force: true });
        }
      },
    );
}
