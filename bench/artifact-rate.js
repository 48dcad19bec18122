#!/usr/bin/env node
// Netboot artifacts to 50 concurrent clients on loopback: wrk (2 threads, 50
// connections, 5 s) fetches a bundle's kernel and initrd from kiln's boot
// server (bench/boot-server.js) over and over, RUNS times (BENCH_RUNS,
// default 3) on one server. Synthetic files of fixed size (vmlinuz 8 MiB,
// initrd.img 56 MiB, random: nothing compresses or caches them differently
// between runs), so runs and machines compare. Figures: MiB/s (median, min,
// max), and the server's resident memory (/proc/PID/status VmRSS) before the
// first run, its peak while serving (sampled every 20 ms) and after the last:
// memory flat means peak ≈ before, not growing with clients or bytes.
// Part of `npm run bench` and `node bench/boot-rate.js`; alone:
//   node bench/artifact-rate.js   (after `npm run build`)
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootServer, hasWrk } from "./boot-rate.js";
import { figure } from "./stats.js";

const PORT = 18098;
const RUNS = Math.max(1, Number(process.env.BENCH_RUNS ?? 3));
const MiB = 1024 * 1024;
const FILES = { vmlinuz: 8, "initrd.img": 56 };

// Requests alternate kernel and initrd; done() prints bytes and µs exactly
// (wrk's own summary rounds to its units).
const LUA = `local n = 0
request = function()
  n = n + 1
  local f = (n % 2 == 0) and "vmlinuz" or "initrd.img"
  return wrk.format("GET", "/artifacts/p/" .. f)
end
done = function(summary, latency, requests)
  io.write(string.format("\\nKILN bytes=%d us=%d errors=%d status=%d\\n", summary.bytes,
    summary.duration, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.errors.status))
end`;

const rssMiB = (pid) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
};

/** MiB/s of one wrk run of `seconds` against the server. */
async function wrkBytes(lua, seconds) {
  const w = spawn(
    "wrk",
    ["-t2", "-c50", `-d${seconds}s`, "--timeout", "30s", "-s", lua, `http://127.0.0.1:${PORT}/`],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  let text = "";
  w.stdout.on("data", (d) => {
    text += d;
  });
  const [code] = await once(w, "close");
  const m = /KILN bytes=(\d+) us=(\d+) errors=(\d+) status=(\d+)/.exec(text);
  if (code !== 0 || !m) throw new Error(`wrk failed (exit ${code}):\n${text}`);
  if (Number(m[3]) || Number(m[4]))
    throw new Error(`artifact fetches failed (socket errors or non-2xx):\n${text}`);
  return Number(m[1]) / MiB / (Number(m[2]) / 1e6);
}

/** {rate: {name, values, unit}, memory: [figures]}, or undefined without wrk. */
export async function artifactRate(runs = RUNS, seconds = 5) {
  if (!hasWrk()) {
    console.error("bench: wrk not installed (apt-get install wrk); skipping artifact rate");
    return undefined;
  }
  const dir = mkdtempSync(join(tmpdir(), "kiln-artifacts-"));
  try {
    const bundle = join(dir, "bench.netboot");
    mkdirSync(bundle);
    for (const [name, mib] of Object.entries(FILES)) {
      const parts = Array.from({ length: mib }, () => randomBytes(MiB));
      writeFileSync(join(bundle, name), Buffer.concat(parts));
    }
    const lua = join(dir, "artifacts.lua");
    writeFileSync(lua, LUA);
    const s = await bootServer(PORT, undefined, undefined, bundle);
    let peak = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssMiB(s.pid));
    }, 20);
    try {
      const before = rssMiB(s.pid);
      const values = [];
      for (let i = 0; i < runs; i++) values.push(await wrkBytes(lua, seconds));
      const after = rssMiB(s.pid);
      const round = (v) => Math.round(v * 10) / 10;
      return {
        rate: { name: "serve.artifacts.50-clients", values, unit: "MiB/s" },
        memory: [
          { name: "serve.artifacts.50-clients.rss.before", value: round(before), unit: "MiB" },
          { name: "serve.artifacts.50-clients.rss.peak", value: round(peak), unit: "MiB" },
          { name: "serve.artifacts.50-clients.rss.after", value: round(after), unit: "MiB" },
        ],
      };
    } finally {
      clearInterval(sampler);
      await s.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.filename === process.argv[1]) {
  const art = await artifactRate();
  if (art) {
    console.log(JSON.stringify(figure(art.rate.name, art.rate.values, art.rate.unit)));
    for (const f of art.memory) console.log(JSON.stringify(f));
  }
}
