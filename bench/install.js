#!/usr/bin/env node
// Install to disk over the network (`npm run bench:install`): a QEMU client
// (TCG, BIOS) with a blank 3 GiB disk PXE-boots from a real `kiln serve`
// (full DHCP on a bridge in a network namespace of its own), installs the
// minimal example and boots it. One JSON object per line: power-on to the
// installed system's login prompt, the installer's own time, its write
// throughput (image bytes / time from "writing" to "reading back"), and the
// image's size against the data that went on the wire.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { dataExtents } from "../dist/deliver/install.js";

const root = resolve(import.meta.dirname, "..");
const kiln = join(root, "bin/kiln.js");
const out = mkdtempSync(join(tmpdir(), "kiln-bench-install-"));
const ns = `kb${process.pid % 10000}`;
const MiB = 1048576;
const procs = [];

function emit(name, value, unit) {
  console.log(JSON.stringify({ name, value: Math.round(value * 100) / 100, unit }));
}
function sh(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: "utf8", cwd: root });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}
function bg(cmd, args, onData) {
  const p = spawn("ip", ["netns", "exec", ns, cmd, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  p.stdout.on("data", (b) => onData?.(b.toString()));
  p.stderr.on("data", (b) => onData?.(b.toString()));
  procs.push(p);
  return p;
}
async function until(what, ok, ms) {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

try {
  for (const spec of ["netboot", "minimal"])
    sh(process.execPath, [kiln, "build", `examples/${spec}.yaml`, "-o", join(out, spec), "-q"]);
  const manifest = JSON.parse(readFileSync(join(out, "minimal", "manifest.json"), "utf8"));
  const image = manifest.artifacts.find((a) => a.format === "disk").size;
  writeFileSync(
    join(out, "inventory.yaml"),
    `profiles:\n  rack: { artifact: ${join(out, "netboot", "netboot.netboot")}, install: { image: ${join(out, "minimal")} } }\ngroups:\n  - { name: all, profile: rack }\n`,
  );
  sh("ip", ["netns", "add", ns]);
  sh("ip", ["-n", ns, "link", "add", "br0", "type", "bridge"]);
  sh("ip", ["-n", ns, "addr", "add", "10.81.0.1/24", "dev", "br0"]);
  sh("ip", ["-n", ns, "link", "set", "br0", "up"]);
  sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
  sh("ip", ["-n", ns, "tuntap", "add", "tap1", "mode", "tap"]);
  sh("ip", ["-n", ns, "link", "set", "tap1", "master", "br0", "up"]);
  let log = "";
  bg(
    process.execPath,
    [
      kiln,
      "serve",
      "--inventory",
      join(out, "inventory.yaml"),
      "--interface",
      "br0",
      "--dhcp",
      "full",
      "--range",
      "10.81.0.100,10.81.0.200",
      "--db",
      join(out, "fleet.sqlite"),
    ],
    (t) => {
      log += t;
    },
  );
  await until("kiln serve", () => log.includes("dnsmasq: DHCP full"), 30_000);
  const disk = join(out, "disk.raw");
  sh("truncate", ["-s", "3G", disk]);
  let con = "";
  const marks = {};
  const mark = (name, re) => {
    if (!marks[name] && re.test(con)) marks[name] = performance.now();
  };
  const t0 = performance.now();
  bg(
    "qemu-system-x86_64",
    [
      "-machine",
      "q35",
      "-accel",
      "tcg,thread=single",
      "-m",
      "512",
      "-nodefaults",
      "-nographic",
      "-serial",
      "stdio",
      "-netdev",
      "tap,id=n0,ifname=tap1,script=no,downscript=no",
      "-device",
      "virtio-net-pci,netdev=n0,mac=52:54:00:81:00:01,bootindex=1",
      "-drive",
      `file=${disk},format=raw,if=none,id=d0`,
      "-device",
      "virtio-blk-pci,drive=d0,bootindex=2",
    ],
    (t) => {
      con += t;
      mark("writing", /kiln-install: writing/);
      mark("verifying", /kiln-install: reading back/);
      mark("installed", /kiln-install: installed/);
      mark("ready", /is installed; booting from its disk[\s\S]*login: ?$/m);
    },
  );
  await until("the installed system's login prompt", () => marks.ready, 1_200_000);
  const extents = await dataExtents(join(out, "minimal", "minimal.raw"), image);
  emit("install.power-on-to-installed-ready", (marks.ready - t0) / 1000, "s");
  emit("install.installer", (marks.installed - marks.writing) / 1000, "s");
  emit(
    "install.write-throughput",
    image / MiB / ((marks.verifying - marks.writing) / 1000),
    "MiB/s",
  );
  emit("install.verify", (marks.installed - marks.verifying) / 1000, "s");
  emit("install.image", image / MiB, "MiB");
  emit(
    "install.data-on-the-wire",
    extents.reduce((n, e) => n + e.countMiB, 0),
    "MiB (before gzip)",
  );
} finally {
  for (const p of procs) p.kill("SIGKILL");
  for (const pid of spawnSync("ip", ["netns", "pids", ns], { encoding: "utf8" })
    .stdout.split("\n")
    .filter(Boolean))
    spawnSync("kill", ["-9", pid]);
  spawnSync("ip", ["netns", "del", ns]);
  rmSync(out, { recursive: true, force: true });
}
