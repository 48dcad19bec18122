import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { diffBuilds } from "../artifact/diff.js";
import { readManifest } from "../artifact/manifest.js";
import { exec, which } from "../util/exec.js";
import { printJson } from "./output.js";

export function registerDiff(program: Command): void {
  program
    .command("diff")
    .argument("<a>", "a build output directory")
    .argument("<b>", "another one")
    .option("--json", "machine-readable output")
    .option("--limit <n>", "differing files to list", "20")
    .option("--deep", "run diffoscope on the first differing file (needs both directory outputs)")
    .description(
      "tell two builds apart: artifacts, packages, and the first files of the root that differ (exit 1 when they differ)",
    )
    .action(async (a: string, b: string, o: { json?: boolean; limit: string; deep?: boolean }) => {
      const d = await diffBuilds(a, b);
      process.exitCode = d.same ? 0 : 1;
      if (o.json) return printJson(d);
      for (const x of d.artifacts)
        console.log(
          `${x.same ? "same   " : "differs"}  ${x.format.padEnd(9)} ${x.path}${x.same ? "" : `  ${x.a?.slice(0, 16) ?? "(none)"} ≠ ${x.b?.slice(0, 16) ?? "(none)"}`}`,
        );
      if (d.packages.length) console.log(`packages:\n  ${d.packages.join("\n  ")}`);
      if (d.filesUnknown) console.log(`files: ${d.filesUnknown}`);
      else if (d.files.length) {
        console.log(`${d.files.length} path${d.files.length > 1 ? "s" : ""} of the root differ:`);
        for (const f of d.files.slice(0, Number(o.limit) || 20))
          console.log(`  ${f.path}\n    a: ${f.a ?? "(absent)"}\n    b: ${f.b ?? "(absent)"}`);
      }
      if (d.byDesign.length) console.log(`different by design: ${d.byDesign.join("; ")}`);
      console.log(d.same ? "the builds are identical" : "the builds differ");
      const first = d.files.find((f) => f.a?.startsWith("f ") && f.b?.startsWith("f "));
      if (o.deep && first) await deep(a, b, first.path);
    });
}

/** diffoscope (Debian's) on one file of both root trees, when both builds kept a directory. */
async function deep(a: string, b: string, path: string): Promise<void> {
  const [ma, mb] = await Promise.all([readManifest(a), readManifest(b)]);
  const fa = join(a, `${ma.name}.rootfs`, path);
  const fb = join(b, `${mb.name}.rootfs`, path);
  if (!existsSync(fa) || !existsSync(fb))
    return console.log("--deep: both builds need a directory output to open the file");
  if (!(await which("diffoscope")))
    return console.log("--deep: diffoscope is not installed (apt-get install diffoscope-minimal)");
  const r = await exec("diffoscope", ["--text", "-", fa, fb], { okCodes: [0, 1] });
  console.log(r.stdout);
}
