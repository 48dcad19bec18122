#!/usr/bin/env node
// Benchmarks of the minimal example. Prints one JSON object per line:
// {"name": ..., "value": ..., "unit": ...}, so runs can be compared.
// BENCH_COLD=0 skips the cold build (a bootstrap with the apt cache warm).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { bootScriptRate } from "./boot-rate.js";

const root = resolve(import.meta.dirname, "..");
const kiln = join(root, "bin/kiln.js");
const out = mkdtempSync(join(tmpdir(), "kiln-bench-"));
const dir = join(out, "minimal");

function emit(name, value, unit) {
  console.log(JSON.stringify({ name, value: Math.round(value * 100) / 100, unit }));
}

function run(args) {
  const t = performance.now();
  const r = spawnSync(process.execPath, [kiln, ...args], { cwd: root, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`kiln ${args.join(" ")} failed:\n${r.stderr}`);
  return { seconds: (performance.now() - t) / 1000, stdout: r.stdout };
}

try {
  if (process.env.BENCH_COLD !== "0") {
    emit(
      "build.cold",
      run(["build", "examples/minimal.yaml", "-o", dir, "--refresh", "-q"]).seconds,
      "s",
    );
  }
  emit("build.warm", run(["build", "examples/minimal.yaml", "-o", dir, "-q"]).seconds, "s");
  const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  emit("size.installed", m.sizes.installed / 1048576, "MiB");
  emit("size.qcow2", m.artifacts.find((a) => a.format === "qcow2").size / 1048576, "MiB");
  emit("packages", m.packages.length, "count");
  const nspawn = JSON.parse(
    run(["boot", join(dir, "minimal.rootfs"), "--until-ready", "--json"]).stdout,
  );
  emit("ready.nspawn", nspawn.seconds, "s");
  for (const fw of ["bios", "uefi"]) {
    const r = JSON.parse(
      run([
        "vm",
        join(dir, "minimal.qcow2"),
        "--firmware",
        fw,
        "--accel",
        "tcg",
        "--until-ready",
        "--json",
      ]).stdout,
    );
    emit(`ready.tcg.${fw}`, r.seconds, "s");
  }
  const direct = JSON.parse(
    run([
      "vm",
      join(dir, "minimal.raw"),
      "--direct-kernel",
      "--accel",
      "tcg",
      "--until-ready",
      "--json",
    ]).stdout,
  );
  emit("ready.tcg.direct-kernel", direct.seconds, "s");
  // Network boot: the bundle booted with its root image served over HTTP.
  const nbDir = join(out, "netboot");
  run(["build", "examples/netboot.yaml", "-o", nbDir, "-q"]);
  const nb = JSON.parse(
    run([
      "vm",
      "--netboot",
      join(nbDir, "netboot.netboot"),
      "--accel",
      "tcg",
      "--until-ready",
      "--json",
    ]).stdout,
  );
  emit("ready.tcg.netboot", nb.seconds, "s");
  emit("size.netboot", dirBytes(join(nbDir, "netboot.netboot")) / 1048576, "MiB");
  const rps = await bootScriptRate();
  if (rps !== undefined) emit("serve.boot-script.rps", rps, "req/s");
} finally {
  rmSync(out, { recursive: true, force: true });
}

function dirBytes(dir) {
  return Number(spawnSync("du", ["-sb", dir], { encoding: "utf8" }).stdout.split("\t")[0]);
}
