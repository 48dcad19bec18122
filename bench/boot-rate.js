#!/usr/bin/env node
// Boot scripts (and agent reports) per second from kiln's boot server on
// loopback (bench/boot-server.js), measured with wrk (2 threads, 32
// connections, 10 s; each request a different machine of 5,000, every one
// committed to the fleet database), RUNS times (BENCH_RUNS, default 3), each
// on a fresh server and database. Part of `npm run bench`;
// `node bench/boot-rate.js` runs it alone (after `npm run build`), with the
// netboot-artifact figures of bench/artifact-rate.js after it.
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { artifactRate } from "./artifact-rate.js";
import { figure } from "./stats.js";

const PORT = 18099;
const RUNS = Math.max(1, Number(process.env.BENCH_RUNS ?? 3));

export const hasWrk = () => spawnSync("sh", ["-c", "command -v wrk"]).status === 0;

// wrk's Lua: each thread numbers its requests; machines cycle through 5,000 MACs.
const LUA = {
  boots: `local id, n = 0, 0
function setup(thread) thread:set("id", math.random(0, 255)) end
function init() id = tonumber(wrk.thread:get("id")) or 0 end
function request()
  n = (n + 1) % 5000
  local mac = string.format("52:54:%02x:00:%02x:%02x", id, math.floor(n / 256), n % 256)
  return wrk.format("GET", "/ipxe?mac=" .. mac .. "&serial=S" .. n)
end`,
  reports: `local id, n = 0, 0
function setup(thread) thread:set("id", math.random(0, 255)) end
function init() id = tonumber(wrk.thread:get("id")) or 0 end
function request()
  n = (n + 1) % 5000
  local agent = string.format("%02x%030d", id, n)
  local mac = string.format("52:54:%02x:00:%02x:%02x", id, math.floor(n / 256), n % 256)
  local body = "machine_id " .. agent .. "\\nmac " .. mac .. "\\nportable web 1.0." .. n .. "\\nstatus ok\\n"
  return wrk.format("POST", "/report?machine_id=" .. agent, nil, body)
end`,
};

/**
 * A boot server on PORT with fleet database DB; resolves once it is ready.
 * ARTIFACT, a directory, is what its profile serves under /artifacts/p/.
 */
export async function bootServer(
  port = PORT,
  db = undefined,
  name = undefined,
  artifact = undefined,
) {
  const srv = spawn(
    process.execPath,
    [
      join(import.meta.dirname, "boot-server.js"),
      String(port),
      // An empty DB argument means "a temporary SQLite file", so NAME stays third
      // (it once became the database's file name, in the working directory).
      db ?? "",
      ...(name ? [name] : []),
    ],
    {
      stdio: ["ignore", "pipe", "inherit"],
      env: artifact ? { ...process.env, KILN_BENCH_ARTIFACT: artifact } : process.env,
    },
  );
  await ready(srv);
  return {
    port,
    pid: srv.pid,
    stop: async () => {
      srv.kill("SIGTERM");
      await once(srv, "close");
    },
  };
}

/** requests/s of `what` (boots or reports) against each port at once, summed. */
export async function wrkRate(ports, what = "boots", seconds = 10) {
  const dir = mkdtempSync(join(tmpdir(), "kiln-wrk-"));
  try {
    const lua = join(dir, `${what}.lua`);
    writeFileSync(lua, LUA[what]);
    const runs = ports.map(async (port) => {
      const w = spawn(
        "wrk",
        ["-t2", "-c32", `-d${seconds}s`, "-s", lua, `http://127.0.0.1:${port}/`],
        {
          stdio: ["ignore", "pipe", "inherit"],
        },
      );
      let text = "";
      w.stdout.on("data", (d) => {
        text += d;
      });
      const [code] = await once(w, "close");
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
      if (code !== 0 || !rps) throw new Error(`wrk failed (exit ${code}):\n${text}`);
      // Non-2xx answers would be a fast error path, not boot scripts or stored reports.
      if (/Non-2xx or 3xx responses/.test(text))
        throw new Error(`the boot server answered errors:\n${text}`);
      return Number(rps[1]);
    });
    return (await Promise.all(runs)).reduce((a, b) => a + b, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The boot-script rate on SQLite in requests/s, one per run (a fresh server
 * and database each), or undefined (with a note) when wrk is not installed.
 */
export async function bootScriptRate(runs = RUNS) {
  if (!hasWrk()) {
    console.error("bench: wrk not installed (apt-get install wrk); skipping boot-script rate");
    return undefined;
  }
  const out = [];
  for (let i = 0; i < runs; i++) {
    const s = await bootServer(PORT);
    try {
      out.push(await wrkRate([PORT], "boots"));
    } finally {
      await s.stop();
    }
  }
  return out;
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
  // The host's load opens and closes the run (as in bench/run.js): a figure from a busy machine says so.
  const load = (when) =>
    console.log(JSON.stringify({ name: `host.load1.${when}`, value: loadavg()[0], unit: "load" }));
  load("start");
  const rps = await bootScriptRate();
  if (rps !== undefined)
    console.log(
      JSON.stringify({ ...figure("serve.boot-script.rps", rps, "req/s"), target: 10_000 }),
    );
  const art = await artifactRate();
  if (art) {
    console.log(JSON.stringify(figure(art.rate.name, art.rate.values, art.rate.unit)));
    for (const f of art.memory) console.log(JSON.stringify(f));
  }
  load("end");
}
