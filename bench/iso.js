#!/usr/bin/env node
// Installer ISO benchmark: ISO size against qcow2 size (target: ISO <= 1.5 x
// qcow2), build time, and the unattended install time in QEMU (TCG, BIOS):
// from the ISO's boot to the installer's reboot, onto a blank 4 GiB disk.
// Prints one JSON object per line, like bench/run.js.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const kiln = join(root, "bin/kiln.js");
const out = mkdtempSync(join(tmpdir(), "kiln-bench-iso-"));
const MiB = 1048576;

function emit(name, value, unit) {
  console.log(JSON.stringify({ name, value: Math.round(value * 100) / 100, unit }));
}

try {
  const dir = join(out, "build");
  let t = performance.now();
  const b = spawnSync(
    process.execPath,
    [kiln, "build", "test/integration/specs/iso.yaml", "-o", dir, "-q"],
    {
      cwd: root,
      encoding: "utf8",
    },
  );
  if (b.status !== 0) throw new Error(`build failed:\n${b.stdout}${b.stderr}`);
  emit("iso build (iso + qcow2 outputs, warm cache)", (performance.now() - t) / 1000, "s");
  const iso = statSync(join(dir, "iso.iso")).size;
  const qcow2 = statSync(join(dir, "iso.qcow2")).size;
  emit("iso size", iso / MiB, "MiB");
  emit("qcow2 size", qcow2 / MiB, "MiB");
  emit("iso / qcow2", iso / qcow2, "ratio (target <= 1.5)");

  const disk = join(out, "target.qcow2");
  spawnSync("qemu-img", ["create", "-q", "-f", "qcow2", disk, "4G"]);
  const log = join(out, "console.log");
  t = performance.now();
  const vm = spawn(
    process.execPath,
    [
      kiln,
      "vm",
      disk,
      "--persist",
      "--cdrom",
      join(dir, "iso.iso"),
      "--no-reboot",
      "--firmware",
      "bios",
      "--accel",
      "tcg",
      "--console-log",
      log,
    ],
    { cwd: root, stdio: ["pipe", "ignore", "inherit"] },
  );
  const code = await new Promise((res) => vm.on("close", res));
  if (code !== 0) throw new Error(`install failed (exit ${code}); console in ${log}`);
  emit("unattended install, ISO boot to reboot (TCG, BIOS)", (performance.now() - t) / 1000, "s");
  const m = /kiln-install: installed .* in (\d+) s/.exec(readFileSync(log, "utf8"));
  if (m) emit("installer's own write and grow", Number(m[1]), "s");
} finally {
  rmSync(out, { recursive: true, force: true });
}
