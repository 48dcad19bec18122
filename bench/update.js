#!/usr/bin/env node
// A/B update benchmark: bundle size against image size, bundle time, and the
// time RAUC takes to install a bundle over HTTP on a QEMU (TCG) machine.
// Prints one JSON object per line, like bench/run.js.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const kiln = join(root, "bin/kiln.js");
const out = mkdtempSync(join(tmpdir(), "kiln-bench-update-"));
const MiB = 1048576;

function emit(name, value, unit) {
  console.log(JSON.stringify({ name, value: Math.round(value * 100) / 100, unit }));
}

function run(args) {
  const t = performance.now();
  const r = spawnSync(process.execPath, [kiln, ...args], { cwd: root, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`kiln ${args.join(" ")} failed:\n${r.stdout}${r.stderr}`);
  return { seconds: (performance.now() - t) / 1000, stdout: r.stdout };
}

const procs = [];
try {
  run(["keys", "init", join(out, "keys"), "-q"]);
  const spec = join(out, "ab.yaml");
  writeFileSync(
    spec,
    `name: bench-ab
extends: ${join(root, "examples/ab.yaml")}
outputs: [qcow2, directory]
update: { keyring: ${join(out, "keys/ca.cert.pem")} }
`,
  );
  const dir = join(out, "build");
  run(["build", spec, "-o", dir, "-q"]);
  const bundle = join(out, "bench-ab.raucb");
  const key = [
    "--key",
    join(out, "keys/signing.key.pem"),
    "--cert",
    join(out, "keys/signing.cert.pem"),
  ];
  emit("bundle.time", run(["bundle", dir, ...key, "-o", bundle, "-q"]).seconds, "s");
  const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  const qcow2 = m.artifacts.find((a) => a.format === "qcow2").size;
  const bundleBytes = statSync(bundle).size;
  emit("bundle.size", bundleBytes / MiB, "MiB");
  emit("image.installed", m.sizes.installed / MiB, "MiB");
  emit("image.qcow2", qcow2 / MiB, "MiB");
  emit("bundle.vs.installed", (100 * bundleBytes) / m.sizes.installed, "%");

  // The bundle over HTTP from a separate process; QEMU's user network reaches it at 10.0.2.2.
  const server = spawn(
    process.execPath,
    [
      "-e",
      `const http=require("node:http"),fs=require("node:fs");
       const s=http.createServer((q,r)=>{const st=fs.statSync(process.argv[1]);
         r.writeHead(200,{"content-length":st.size});fs.createReadStream(process.argv[1]).pipe(r);});
       s.listen(0,"127.0.0.1",()=>console.log(s.address().port));`,
      bundle,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  procs.push(server);
  const port = await new Promise((r) => server.stdout.once("data", (b) => r(String(b).trim())));
  const vm = spawn(
    process.execPath,
    [
      kiln,
      "vm",
      join(dir, "bench-ab.qcow2"),
      "--firmware",
      "bios",
      "--accel",
      "tcg",
      "--ssh",
      "--console-log",
      join(out, "console.log"),
    ],
    { cwd: root, stdio: "ignore" },
  );
  procs.push(vm);
  const ssh = (...cmd) =>
    spawnSync(process.execPath, [kiln, "ssh", "bench-ab", "--", ...cmd], {
      cwd: root,
      encoding: "utf8",
    });
  for (
    let i = 0;
    i < 120 && ssh("systemctl", "is-active", "kiln-health.service").stdout.trim() !== "active";
    i++
  )
    await new Promise((r) => setTimeout(r, 2000));
  const t = performance.now();
  const r = ssh("rauc", "install", `http://10.0.2.2:${port}/bench-ab.raucb`);
  if (r.status !== 0) throw new Error(`rauc install failed:\n${r.stdout}${r.stderr}`);
  emit("install.http.tcg", (performance.now() - t) / 1000, "s");
} finally {
  for (const p of procs.reverse()) p.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 3000));
  rmSync(out, { recursive: true, force: true });
}
