import { existsSync, statSync } from "node:fs";
import type { Command } from "commander";
import { diskRootDir, type Ephemeral, unpackTar } from "../runtime/ephemeral.js";
import { nspawnArgs, startContainer } from "../runtime/nspawn.js";
import { bootFailure, bootUntilReady } from "../runtime/ready.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { printJson } from "./output.js";

export function registerBoot(program: Command): void {
  program
    .command("boot")
    .argument(
      "<artifact>",
      "a root filesystem directory, a .tar/.tar.zst, or a raw/qcow2 disk image",
    )
    .option("--persist", "keep changes made while running (directories only; default: thrown away)")
    .option("--until-ready", "boot, report time to ready, shut down (exit 2 if not ready)")
    .option("--timeout <seconds>", "with --until-ready", "120")
    .option("--json", "with --until-ready: the report as JSON")
    .description("boot an artifact in systemd-nspawn")
    .action(
      async (
        artifact: string,
        o: { persist?: boolean; untilReady?: boolean; timeout: string; json?: boolean },
      ) => {
        if (!existsSync(artifact))
          throw new KilnError("BOOT_NO_ARTIFACT", `${artifact} does not exist`);
        let dir = artifact;
        let scratch: Ephemeral | undefined;
        let disk: Ephemeral | undefined;
        // Directories get nspawn's own throw-away overlay; unpacked tars and disks are throw-away already.
        let persist = !!o.persist;
        if (/\.(raw|img|qcow2)$/.test(artifact)) {
          if (o.persist)
            throw new KilnError(
              "BOOT_PERSIST_DISK",
              "--persist is for directories; a disk's root is booted read-only with a throw-away overlay",
              { hint: "to keep changes to a disk, use `kiln vm --persist`" },
            );
          disk = await diskRootDir(artifact);
          dir = disk.path;
          persist = true;
        } else if (!statSync(artifact).isDirectory()) {
          if (!/\.tar(\.zst|\.gz|\.xz)?$/.test(artifact))
            throw new KilnError("BOOT_FORMAT", `${artifact} is not a directory, tar or disk image`);
          scratch = await unpackTar(artifact);
          dir = scratch.path;
          persist = true;
        }
        try {
          if (!o.untilReady) {
            await exec("systemd-nspawn", nspawnArgs({ dir, persist }), {
              inherit: true,
              okCodes: [0, 130, 133, 143],
            });
            return;
          }
          const c = await startContainer({ dir, persist });
          const r = await bootUntilReady("nspawn", c, Number(o.timeout) * 1000);
          if (o.json) printJson(r);
          else if (r.ready) console.log(`nspawn: ready in ${r.seconds}s`);
          if (!r.ready) {
            // With --json the report (reason and console tail included) is the whole answer.
            if (o.json) process.exitCode = 2;
            else throw bootFailure(r);
          }
        } finally {
          await disk?.dispose();
          await scratch?.dispose();
        }
      },
    );
}
