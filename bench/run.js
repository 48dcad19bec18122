#!/usr/bin/env node
// Benchmarks of the minimal example. Prints one JSON object per line:
// {"name", "value", "unit"} and, for figures measured more than once, the
// median as value with "min", "max" and "runs"; "target" where the
// engineering issue set one. Boots also give their breakdown (firmware,
// loader, kernel, initrd, userspace: see BootBreakdown in src/runtime/console.ts)
// as NAME.PHASE figures, and the guest's five slowest units in the median
// run as NAME.slowest, with the critical chain its login prompt waited for
// as NAME.critical_chain. The host's load average opens and closes the run,
// so a figure measured on a busy machine says so.
// BENCH_COLD=0 skips the cold build; BENCH_RUNS=N boots each N times (default 3);
// BENCH_ARM64=0 skips the arm64 figures (the minimal example built for arm64
// through qemu-user, booted under qemu-system-aarch64: emulated, so beside
// amd64's TCG figures rather than against a target).
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { artifactRate } from "./artifact-rate.js";
import { bootScriptRate } from "./boot-rate.js";
import { spread } from "./stats.js";

const root = resolve(import.meta.dirname, "..");
const kiln = join(root, "bin/kiln.js");
const out = mkdtempSync(join(tmpdir(), "kiln-bench-"));
const dir = join(out, "minimal");
const RUNS = Math.max(1, Number(process.env.BENCH_RUNS ?? 3));

// The engineering issue's targets (this 2-core machine kind, TCG).
const TARGETS = {
  "ready.tcg.bios": 8,
  "ready.tcg.uefi": 12,
  "ready.tcg.direct-kernel": 5,
  "ready.tcg.netboot": 15,
  "ready.nspawn": 0.3,
  "serve.boot-script.rps": 10_000,
  "size.installed": 120,
  "size.qcow2": 45,
  // The same size targets for the profile without a package manager (examples/nano.yaml).
  "size.installed.nano": 120,
  "size.qcow2.nano": 45,
  "build.warm": 3,
  "build.one-file": 5,
};

const round = (v) => Math.round(v * 100) / 100;

function emit(name, value, unit, extra = {}) {
  const target = TARGETS[name];
  const o = { name, value: round(value), unit, ...extra };
  if (target !== undefined) o.target = target;
  console.log(JSON.stringify(o));
}

function emitSpread(name, values, unit) {
  if (!values.length) return;
  const { median, min, max } = spread(values);
  emit(name, median, unit, { min: round(min), max: round(max), runs: values.length });
}

function run(args) {
  const t = performance.now();
  const r = spawnSync(process.execPath, [kiln, ...args], { cwd: root, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`kiln ${args.join(" ")} failed:\n${r.stderr}`);
  return { seconds: (performance.now() - t) / 1000, stdout: r.stdout };
}

/** Boot RUNS times with --until-ready --json; emit the time to ready and each phase. */
function bench(name, args) {
  const reports = [];
  for (let i = 0; i < RUNS; i++)
    reports.push(JSON.parse(run([...args, "--until-ready", "--json"]).stdout));
  emitSpread(
    name,
    reports.map((r) => r.seconds),
    "s",
  );
  for (const phase of ["firmware", "loader", "kernel", "initrd", "userspace"]) {
    const values = reports.map((r) => r.breakdown?.[phase]).filter((v) => v !== undefined);
    emitSpread(`${name}.${phase}`, values, "s");
  }
  // The guest's slowest units (systemd-analyze blame) in the median run.
  const byTime = reports.filter((r) => r.slowest?.length).sort((a, b) => a.seconds - b.seconds);
  const mid = byTime[Math.floor((byTime.length - 1) / 2)];
  if (mid)
    console.log(
      JSON.stringify({ name: `${name}.slowest`, value: mid.slowest.slice(0, 5), unit: "s" }),
    );
  // …and what its login prompt waited for (systemd-analyze critical-chain getty.target).
  if (mid?.chain?.length)
    console.log(JSON.stringify({ name: `${name}.critical_chain`, value: mid.chain, unit: "s" }));
}

const load = (when) => {
  const [one, five] = loadavg();
  emit(`host.load1.${when}`, one, "load");
  emit(`host.load5.${when}`, five, "load");
  // A rebuild waits on the disk as much as on the CPUs: the share of the last
  // minute some task stalled on I/O (PSI), where the kernel has it.
  const some = /^some .*avg60=([\d.]+)/m.exec(readPressure("io"));
  if (some) emit(`host.io_pressure60.${when}`, Number(some[1]), "%");
};

function readPressure(kind) {
  try {
    return readFileSync(`/proc/pressure/${kind}`, "utf8");
  } catch {
    return "";
  }
}

try {
  load("start");
  if (process.env.BENCH_COLD !== "0") {
    emit(
      "build.cold",
      run(["build", "examples/minimal.yaml", "-o", dir, "--refresh", "-q"]).seconds,
      "s",
    );
  }
  const warm = [];
  for (let i = 0; i < RUNS; i++)
    warm.push(run(["build", "examples/minimal.yaml", "-o", dir, "-q"]).seconds);
  emitSpread("build.warm", warm, "s");
  // One files: entry changed: a new motd each run, so every run rebuilds.
  const one = join(out, "one.yaml");
  const example = readFileSync(join(root, "examples/minimal.yaml"), "utf8");
  const oneFile = [];
  for (let i = 0; i <= RUNS; i++) {
    writeFileSync(one, example.replace("built by kiln", `built by kiln, run ${i}`));
    const s = run(["build", one, "-o", join(out, "one"), "-q"]).seconds;
    if (i > 0) oneFile.push(s); // the first fills the output directory
  }
  emitSpread("build.one-file", oneFile, "s");
  // The same spec locked (a copy, so the example keeps no lock): warm builds
  // from the lock's cached root, which asks no mirror for its suites' dates.
  const locked = join(out, "locked.yaml");
  copyFileSync(join(root, "examples/minimal.yaml"), locked);
  run(["lock", locked, "-q"]);
  const warmLocked = [];
  for (let i = 0; i < RUNS + 1; i++)
    warmLocked.push(run(["build", locked, "-o", join(out, "locked"), "-q"]).seconds);
  // The first locked build installs the root from the lock; the rest reuse it.
  emit("build.locked.first", warmLocked.shift(), "s");
  emitSpread("build.warm.locked", warmLocked, "s");
  const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  emit("size.installed", m.sizes.installed / 1048576, "MiB");
  emit("size.qcow2", m.artifacts.find((a) => a.format === "qcow2").size / 1048576, "MiB");
  emit("packages", m.packages.length, "count");
  bench("ready.nspawn", ["boot", join(dir, "minimal.rootfs")]);
  for (const fw of ["bios", "uefi"])
    bench(`ready.tcg.${fw}`, [
      "vm",
      join(dir, "minimal.qcow2"),
      "--firmware",
      fw,
      "--accel",
      "tcg",
    ]);
  bench("ready.tcg.direct-kernel", [
    "vm",
    join(dir, "minimal.raw"),
    "--direct-kernel",
    "--accel",
    "tcg",
  ]);
  // Network boot: the bundle booted with its root image served over HTTP.
  const nbDir = join(out, "netboot");
  run(["build", "examples/netboot.yaml", "-o", nbDir, "-q"]);
  bench("ready.tcg.netboot", ["vm", "--netboot", join(nbDir, "netboot.netboot"), "--accel", "tcg"]);
  emit("size.netboot", dirBytes(join(nbDir, "netboot.netboot")) / 1048576, "MiB");
  // profile nano: the minimal server without its package manager.
  const nanoDir = join(out, "nano");
  run(["build", "examples/nano.yaml", "-o", nanoDir, "-q"]);
  const nm = JSON.parse(readFileSync(join(nanoDir, "manifest.json"), "utf8"));
  emit("size.installed.nano", nm.sizes.installed / 1048576, "MiB");
  emit("size.qcow2.nano", nm.artifacts.find((a) => a.format === "qcow2").size / 1048576, "MiB");
  emit("packages.nano", nm.packages.length, "count");
  bench("ready.tcg.bios.nano", [
    "vm",
    join(nanoDir, "nano.qcow2"),
    "--firmware",
    "bios",
    "--accel",
    "tcg",
  ]);
  if (process.env.BENCH_ARM64 !== "0") {
    const armDir = join(out, "arm64");
    const spec = join(out, "minimal-arm64.yaml");
    writeFileSync(
      spec,
      `extends: ${join(root, "examples/minimal.yaml")}\nname: minimal-arm64\narchitecture: arm64\ndisk: { firmware: [uefi] }\noutputs: [disk, qcow2]\n`,
    );
    emit("build.arm64", run(["build", spec, "-o", armDir, "-q"]).seconds, "s");
    const am = JSON.parse(readFileSync(join(armDir, "manifest.json"), "utf8"));
    emit("size.installed.arm64", am.sizes.installed / 1048576, "MiB");
    bench("ready.tcg.arm64.uefi", ["vm", join(armDir, "minimal-arm64.qcow2")]);
  }
  const rps = await bootScriptRate();
  if (rps !== undefined) emitSpread("serve.boot-script.rps", rps, "req/s");
  const art = await artifactRate();
  if (art) {
    emitSpread(art.rate.name, art.rate.values, art.rate.unit);
    for (const f of art.memory) emit(f.name, f.value, f.unit);
  }
  load("end");
} finally {
  rmSync(out, { recursive: true, force: true });
}

function dirBytes(dir) {
  return Number(spawnSync("du", ["-sb", dir], { encoding: "utf8" }).stdout.split("\t")[0]);
}
