#!/usr/bin/env node
// Boot scripts per second from kiln's boot server on loopback (bench/boot-server.js),
// measured with wrk (2 threads, 32 connections, 10 s). Part of `npm run bench`;
// `node bench/boot-rate.js` runs it alone (after `npm run build`).
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";

const PORT = 18099;

/** The rate in requests/s, or undefined (with a note) when wrk is not installed. */
export async function bootScriptRate() {
  if (spawnSync("sh", ["-c", "command -v wrk"]).status !== 0) {
    console.error("bench: wrk not installed (apt-get install wrk); skipping boot-script rate");
    return undefined;
  }
  const srv = spawn(process.execPath, [join(import.meta.dirname, "boot-server.js"), String(PORT)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    await ready(srv);
    const w = spawn(
      "wrk",
      ["-t2", "-c32", "-d10s", `http://127.0.0.1:${PORT}/ipxe?mac=52:54:00:00:00:01&serial=S1`],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let text = "";
    w.stdout.on("data", (d) => {
      text += d;
    });
    const [code] = await once(w, "close");
    const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
    if (code !== 0 || !rps) throw new Error(`wrk failed (exit ${code}):\n${text}`);
    // Non-2xx answers would be a fast error path, not boot scripts.
    if (/Non-2xx or 3xx responses/.test(text))
      throw new Error(`the boot server answered errors:\n${text}`);
    return Number(rps[1]);
  } finally {
    srv.kill("SIGTERM");
    await once(srv, "close");
  }
}

/** Resolves once the server prints "ready"; rejects if it exits first or takes over 20 s. */
function ready(srv) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("boot server not ready after 20 s")), 20_000);
    let out = "";
    srv.stdout.on("data", (d) => {
      out += d;
      if (out.includes("ready\n")) {
        clearTimeout(timer);
        resolve();
      }
    });
    srv.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`boot server exited (${code}) before it was ready`));
    });
  });
}

if (import.meta.filename === process.argv[1]) {
  const rps = await bootScriptRate();
  if (rps !== undefined)
    console.log(
      JSON.stringify({ name: "serve.boot-script.rps", value: Math.round(rps), unit: "req/s" }),
    );
}
