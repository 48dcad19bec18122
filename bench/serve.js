// kiln serve under load, with its limits on (the defaults): a real `kiln serve`
// process on loopback (HTTP only), driven by Node's http client from many
// loopback source addresses (127.0.x.y, so the per-address rate limit applies
// per client as on a real boot network). Prints one JSON object per figure:
//   serve.boot-script.rps   per-machine iPXE scripts answered 200 per second
//   serve.report.rps        agent reports (1 KiB) accepted per second
//   serve.rss.after-100k-reports  resident memory after 100k reports from distinct machines
// Run: npm run build && npm run bench:serve
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "..");
const PORT = 23000 + Math.floor(Math.random() * 8000);
const SOURCES = 1024;
const BOOTS = Number(process.env.BENCH_BOOTS ?? 20_000);
const REPORTS = Number(process.env.BENCH_REPORTS ?? 100_000);
const out = mkdtempSync(join(tmpdir(), "kiln-bench-serve-"));

function emit(name, value, unit, extra = {}) {
  console.log(JSON.stringify({ name, value: Number(value.toFixed(1)), unit, ...extra }));
}

const agent = new Agent({ keepAlive: true, maxSockets: 2 });
const src = (i) => `127.0.${1 + ((i >> 8) % (SOURCES >> 8))}.${i & 255}`;

function req(path, o = {}) {
  return new Promise((res) => {
    const r = request(
      {
        host: "127.0.0.1",
        port: PORT,
        path,
        method: o.method ?? "GET",
        agent,
        localAddress: o.from ?? "127.0.0.1",
      },
      (resp) => {
        resp.resume();
        resp.on("end", () => res(resp.statusCode ?? 0));
        resp.on("error", () => res(-1));
      },
    );
    r.on("error", () => res(-1));
    r.end(o.body);
  });
}

async function flood(count, concurrency, make) {
  const statuses = {};
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const s = await make(next++);
        statuses[s] = (statuses[s] ?? 0) + 1;
      }
    }),
  );
  return { statuses, seconds: (performance.now() - t0) / 1000 };
}

function rssMiB(pid) {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) / 1024;
}

const bundle = join(out, "bundle");
mkdirSync(bundle);
writeFileSync(join(bundle, "cmdline"), "console=ttyS0,115200\n");
writeFileSync(
  join(out, "inventory.yaml"),
  `profiles:\n  p: { artifact: ${bundle}, metadata: { hostname: h } }\ngroups:\n  - { name: all, profile: p }\n`,
);
const serve = spawn(
  process.execPath,
  [
    join(ROOT, "bin/kiln.js"),
    "serve",
    "--inventory",
    join(out, "inventory.yaml"),
    "--interface",
    "lo",
    "--dhcp",
    "off",
    "--http-port",
    String(PORT),
    "--admin-listen",
    `127.0.0.1:${PORT + 1}`,
    "--db",
    join(out, "machines.sqlite"),
  ],
  { stdio: ["ignore", "ignore", "pipe"] },
);
let log = "";
serve.stderr.on("data", (b) => {
  log += b;
});
try {
  const end = Date.now() + 20_000;
  while (!log.includes("dnsmasq: DHCP off")) {
    if (Date.now() > end || serve.exitCode !== null)
      throw new Error(`kiln serve did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  emit("serve.rss.idle", rssMiB(serve.pid), "MiB");

  const hex = (i) => i.toString(16).padStart(12, "0");
  const boots = await flood(BOOTS, 32, (i) =>
    req(`/ipxe?mac=52:54:${hex(i).slice(4).match(/../g).join(":")}&serial=S${i}`, { from: src(i) }),
  );
  emit("serve.boot-script.rps", (boots.statuses[200] ?? 0) / boots.seconds, "req/s", {
    requests: BOOTS,
    statuses: boots.statuses,
  });

  // In rounds of 20k, so that the figures show memory does not grow with the count.
  const body = Buffer.alloc(1024, "x");
  const round = Math.min(20_000, REPORTS);
  const statuses = {};
  let seconds = 0;
  for (let done = 0; done < REPORTS; done += round) {
    const r = await flood(round, 32, (i) =>
      req(`/report?machine_id=${(done + i).toString(16).padStart(32, "0")}`, {
        method: "POST",
        body,
        from: src(done + i),
      }),
    );
    seconds += r.seconds;
    for (const [k, v] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
    if (done === 0) {
      await new Promise((r) => setTimeout(r, 2000));
      emit(`serve.rss.after-${round / 1000}k-reports`, rssMiB(serve.pid), "MiB");
    }
  }
  emit("serve.report.rps", (statuses[204] ?? 0) / seconds, "req/s", {
    requests: REPORTS,
    statuses,
  });
  // Let the collector settle, as a server between rounds of agents would.
  await new Promise((r) => setTimeout(r, 2000));
  emit(`serve.rss.after-${REPORTS / 1000}k-reports`, rssMiB(serve.pid), "MiB");
} finally {
  agent.destroy();
  serve.kill("SIGTERM");
  await new Promise((r) => serve.on("close", r));
  rmSync(out, { recursive: true, force: true });
}
