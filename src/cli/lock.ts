import type { Command } from "commander";
import { lockSpec } from "../builder/lock.js";
import { requireTools } from "../util/doctor.js";
import { step } from "../util/log.js";
import { printJson } from "./output.js";

export function registerLock(program: Command): void {
  program
    .command("lock")
    .argument("<spec>", "the spec to lock")
    .option("--update", "replace an existing lock and show what changed")
    .option("--json", "print the result as JSON")
    .description(
      "write SPEC.lock: every package's exact version and .deb sha256, and the builds' SOURCE_DATE_EPOCH",
    )
    .action(async (spec: string, o: { update?: boolean; json?: boolean }) => {
      await requireTools(["mmdebstrap"]);
      const progress = step(`resolving ${spec} against its mirrors`);
      let r: Awaited<ReturnType<typeof lockSpec>>;
      try {
        r = await lockSpec(spec, { update: !!o.update, onLine: (l) => progress.detail(l) });
      } catch (err) {
        progress.fail();
        throw err;
      }
      progress.done(`${r.lock.packages.length} packages`);
      if (o.json)
        return printJson({
          ok: true,
          file: r.file,
          packages: r.lock.packages.length,
          sourceDateEpoch: r.lock.sourceDateEpoch,
          changes: r.changes,
        });
      console.log(
        `locked ${r.lock.packages.length} packages in ${r.file} (SOURCE_DATE_EPOCH ${r.lock.sourceDateEpoch}, ${new Date(r.lock.sourceDateEpoch * 1000).toISOString()})`,
      );
      if (r.replaced)
        console.log(r.changes.length ? `changes:\n${r.changes.join("\n")}` : "no package changed");
    });
}
