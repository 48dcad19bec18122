#!/usr/bin/env node
// Benchmarks of the minimal example. Prints one JSON object per line:
// {"name": ..., "value": ..., "unit": ...}, so runs can be compared.
// BENCH_COLD=0 skips the cold build (a bootstrap with the apt cache warm).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

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
  bootScriptRate();
} finally {
  rmSync(out, { recursive: true, force: true });
}

function dirBytes(dir) {
  return Number(spawnSync("du", ["-sb", dir], { encoding: "utf8" }).stdout.split("\t")[0]);
}

/** Requests per second for per-machine boot scripts, served by kiln on loopback, measured by wrk. */
function bootScriptRate() {
  if (spawnSync("sh", ["-c", "command -v wrk"]).status !== 0) {
    console.error("bench: wrk not installed (apt-get install wrk); skipping boot-script rate");
    return;
  }
  const srv = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const wait = Date.now() + 10000;
  while (Date.now() < wait) {
    const r = spawnSync("bash", ["-c", "exec 3<>/dev/tcp/127.0.0.1/18099"]);
    if (r.status === 0) break;
    spawnSync("sleep", ["0.2"]);
  }
  const w = spawnSync(
    "wrk",
    ["-t2", "-c32", "-d10s", "http://127.0.0.1:18099/ipxe?mac=52:54:00:00:00:01&serial=S1"],
    { encoding: "utf8" },
  );
  srv.kill();
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(w.stdout);
  if (rps) emit("serve.boot-script.rps", Number(rps[1]), "req/s");
}
