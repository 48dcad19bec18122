import { existsSync, statSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import type { Command } from "commander";
import { type Manifest, manifestPath, readManifest } from "../artifact/manifest.js";
import { build, planFor } from "../builder/build.js";
import { junitXml } from "../check/junit.js";
import {
  artifactsOf,
  type DiskChoice,
  runTarget,
  TARGETS,
  type Target,
  targetsFor,
  unbootable,
} from "../check/run.js";
import type { Check } from "../config/schema.js";
import { isDiskImage } from "../runtime/ephemeral.js";
import { breakdownText } from "../runtime/ready.js";
import { hostArch } from "../util/binfmt.js";
import { KilnError } from "../util/errors.js";
import { log } from "../util/log.js";
import { printJson } from "./output.js";

const NAMES = TARGETS.map((t) => t.target);

const DEFAULT_TIMEOUT = 240;
/** An arm64 VM on an amd64 host is emulated instruction by instruction: it boots a few times slower. */
const EMULATED_TIMEOUT = 720;

function bootTimeout(given: string | undefined, arch: string, target: Target): number {
  if (given !== undefined) return Number(given);
  return arch !== hostArch() && target !== "nspawn" ? EMULATED_TIMEOUT : DEFAULT_TIMEOUT;
}

export function registerTest(program: Command): void {
  program
    .command("test")
    .argument(
      "<spec-or-artifact>",
      "a spec (built first if its output is missing or stale), a build directory, or an image in one",
    )
    .option(
      "--on <targets>",
      `comma-separated: ${NAMES.join(", ")} (default: every target the artifacts allow)`,
    )
    .option("-o, --output <dir>", "build directory for a spec (default: out/NAME)")
    .option("--junit <file>", "write JUnit XML")
    .option("--accel <kind>", "auto, kvm or tcg", "auto")
    .option(
      "--timeout <seconds>",
      `boot timeout per target (default ${DEFAULT_TIMEOUT}; an emulated arm64 VM ${EMULATED_TIMEOUT})`,
    )
    .option(
      "--seed <dir-or-iso>",
      "attach a cloud-init NoCloud seed to the VM targets (see `kiln seed`)",
    )
    .option(
      "--disks <list>",
      "a mirrored root (disk.layout: raid1): the disks to boot, by number, `blank` for an empty replacement (e.g. 1, 2, 1,blank; default all)",
    )
    .option("--json", "the results as JSON on stdout")
    .description(
      "boot the artifact on each target and run the spec's tests: inside it (exit 0 pass, 1 a check failed, 2 a boot failed)",
    )
    .action(
      async (
        arg: string,
        o: {
          on?: string;
          output?: string;
          junit?: string;
          accel: string;
          timeout?: string;
          seed?: string;
          disks?: string;
          json?: boolean;
        },
      ) => {
        const { dir, manifest } = await resolveArtifact(arg, o.output);
        const artifacts = artifactsOf(dir, manifest);
        // An image named on the command line is the one tested (e.g. a disk an installer wrote),
        // with the checks of the manifest beside it.
        if (isDiskImage(arg) && statSync(arg).isFile()) {
          artifacts.disk = resolve(arg);
          delete artifacts.mirror;
          delete artifacts.rootfs;
          delete artifacts.netboot;
          delete artifacts.iso;
        }
        const arch = manifest.distribution.architecture;
        const wanted = o.on ? o.on.split(",").map((s) => s.trim()) : targetsFor(artifacts, arch);
        for (const t of wanted) {
          if (!NAMES.includes(t as Target))
            throw new KilnError("USAGE", `unknown target ${t}: use ${NAMES.join(", ")}`, {
              exitCode: 2,
            });
          const why = unbootable(t as Target, arch);
          if (why) throw new KilnError("USAGE", `cannot test on ${t}: ${why}`, { exitCode: 2 });
        }
        const disks = o.disks === undefined ? undefined : parseDisks(o.disks);
        const count = artifacts.mirror?.length ?? (artifacts.disk ? 1 : 0);
        const absent = disks?.find((d) => d !== "blank" && d > count);
        if (absent !== undefined)
          throw new KilnError(
            "USAGE",
            `--disks ${o.disks}: there is no disk ${absent} (${manifest.name} has ${count}; disk.layout: raid1 writes one per mirror)`,
            { exitCode: 2 },
          );
        if (!["auto", "kvm", "tcg"].includes(o.accel))
          throw new KilnError("USAGE", "--accel is auto, kvm or tcg", { exitCode: 2 });
        // A run that checks nothing must not pass: a CI job would go green having tested nothing.
        if (!wanted.length)
          throw new KilnError(
            "TEST_NOTHING",
            `nothing in ${dir} can be booted: its outputs are ${manifest.artifacts.map((a) => a.format).join(", ") || "none"}`,
            {
              hint: `kiln test boots ${TARGETS.map((t) => `${t.target} (${t.boots})`).join("; ")}`,
              exitCode: 2,
            },
          );
        const checksOf = (target: string) =>
          manifest.tests.filter((c: Check) => !c.on || c.on.includes(target as Target));
        const bare = wanted.filter((t) => !checksOf(t).length);
        if (bare.length)
          throw new KilnError(
            "TEST_NOTHING",
            `${manifest.name} has no checks to run on ${bare.join(", ")}: a boot alone proves little`,
            {
              hint: "add `tests:` to the spec (see README, Booting and testing), or leave the target out with --on",
              exitCode: 2,
            },
          );
        const reports = [];
        for (const target of wanted as Target[]) {
          const checks = checksOf(target);
          log.info(`booting ${manifest.name} on ${target}…`);
          const r = await runTarget(target, artifacts, checks, {
            arch,
            bootTimeoutMs: bootTimeout(o.timeout, arch, target) * 1000,
            checksTimeoutMs: 180_000,
            accel: o.accel as "auto",
            ...(o.seed ? { seed: o.seed } : {}),
            ...(disks ? { disks } : {}),
            onRetry: (t, why) => log.warn(`${t}: ${why}: not the image's fault; booting again`),
          });
          reports.push(r);
          if (!o.json) printTarget(r);
        }
        const bootFailed = reports.some((r) => !r.ready);
        const checkFailed = reports.some((r) => r.results.some((c) => !c.passed));
        if (o.junit) await writeFile(o.junit, junitXml(manifest.name, reports));
        if (o.json)
          printJson({ ok: !bootFailed && !checkFailed, name: manifest.name, targets: reports });
        else {
          const total = reports.reduce((n, r) => n + r.results.length, 0);
          const passed = reports.reduce((n, r) => n + r.results.filter((c) => c.passed).length, 0);
          console.log(
            `\n${passed}/${total} checks passed on ${reports.length} target(s)${bootFailed ? "; a boot failed" : ""}`,
          );
        }
        process.exitCode = bootFailed ? 2 : checkFailed ? 1 : 0;
      },
    );
}

/** `--disks 1,blank`: disk numbers from 1, or blank. */
export function parseDisks(text: string): DiskChoice[] {
  return text.split(",").map((d) => {
    const t = d.trim();
    if (t === "blank") return "blank";
    if (/^[1-9]$/.test(t)) return Number(t);
    throw new KilnError("USAGE", `--disks takes disk numbers (1, 2, …) and blank, not ${t}`, {
      exitCode: 2,
    });
  });
}

function printTarget(r: Awaited<ReturnType<typeof runTarget>>): void {
  const accel = r.accel ? `/${r.accel}` : "";
  if (!r.ready) {
    console.log(`✗ ${r.target}${accel}: boot failed: ${r.bootError}`);
    return;
  }
  const passed = r.results.filter((c) => c.passed).length;
  console.log(
    `${passed === r.results.length ? "✓" : "✗"} ${r.target}${accel}: ready in ${r.readySeconds}s${breakdownText(r.breakdown)}, ${passed}/${r.results.length} checks passed`,
  );
  for (const c of r.results) {
    console.log(
      c.passed ? `    ✓ ${c.name}` : `    ✗ ${c.name}: expected ${c.expected}, got ${c.actual}`,
    );
  }
  if (r.checksError) console.log(`  ${r.checksError}`);
}

async function resolveArtifact(
  arg: string,
  output?: string,
): Promise<{ dir: string; manifest: Manifest }> {
  if (!existsSync(arg))
    throw new KilnError("TEST_NOT_FOUND", `${arg} does not exist`, { exitCode: 2 });
  if (/\.ya?ml$/.test(arg)) {
    const { plan } = planFor(arg);
    const dir = resolve(output ?? join("out", plan.name));
    const current =
      existsSync(manifestPath(dir)) && (await readManifest(dir)).specHash === plan.specHash;
    if (!current) {
      log.info(`building ${arg} first`);
      await build(arg, { outDir: dir });
    }
    return { dir, manifest: await readManifest(dir) };
  }
  const dir = statSync(arg).isDirectory() && existsSync(manifestPath(arg)) ? arg : dirname(arg);
  const manifest = await readManifest(dir, {
    hint: "test a spec, or the output directory of `kiln build`",
    exitCode: 2,
  });
  return { dir: resolve(dir), manifest };
}
