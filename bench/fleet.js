#!/usr/bin/env node
// Fleet figures (`npm run bench:fleet`), one JSON object per line:
// - group selection with 10,000 machines and 1,000 groups in the inventory (p50/p99);
// - boot scripts/s and reports/s on loopback (wrk) with each backend, every
//   request committed to the database before it is answered;
// - the same on PostgreSQL (a temporary server from Debian's package) with 1 and 2 replicas.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadInventory, selectGroup } from "../dist/deliver/inventory.js";
import { startPostgres } from "../test/support/postgres.js";
import { bootServer, hasWrk, wrkRate } from "./boot-rate.js";

function emit(name, value, unit) {
  console.log(JSON.stringify({ name, value: Math.round(value * 1000) / 1000, unit }));
}

// Selection: 1,000 groups over racks and serials, 10,000 machines' facts.
{
  const dir = mkdtempSync(join(tmpdir(), "kiln-bench-inv-"));
  try {
    const groups = Array.from(
      { length: 1000 },
      (_, g) =>
        `  - { name: g${g}, profile: p, selector: { rack: r${g % 100}, serial: [S${g}-0, S${g}-1, S${g}-2] } }`,
    );
    writeFileSync(
      join(dir, "inventory.yaml"),
      `profiles:\n  p: {}\ngroups:\n${groups.join("\n")}\n  - { name: default, profile: p }\n`,
    );
    const inv = loadInventory(join(dir, "inventory.yaml"));
    const machines = Array.from({ length: 10_000 }, (_, i) => ({
      mac: `52:54:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`,
      serial: `S${i % 1200}-${i % 3}`,
      rack: `r${i % 100}`,
    }));
    for (const m of machines) selectGroup(inv, m); // warm up
    const times = machines.map((m) => {
      const t = process.hrtime.bigint();
      selectGroup(inv, m);
      return Number(process.hrtime.bigint() - t) / 1e6;
    });
    times.sort((a, b) => a - b);
    emit("fleet.select.p50", times[Math.floor(times.length * 0.5)], "ms");
    emit("fleet.select.p99", times[Math.floor(times.length * 0.99)], "ms");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (!hasWrk()) {
  console.error("bench: wrk not installed (apt-get install wrk); the request rates need it");
  process.exit(1);
}

async function rates(label, dbs) {
  const servers = [];
  try {
    for (const [i, db] of dbs.entries())
      servers.push(await bootServer(18100 + i, db, `replica-${i}`));
    const ports = servers.map((s) => s.port);
    emit(`fleet.${label}.boot-scripts`, await wrkRate(ports, "boots"), "req/s");
    emit(`fleet.${label}.reports`, await wrkRate(ports, "reports"), "req/s");
  } finally {
    for (const s of servers) await s.stop();
  }
}

await rates("sqlite", [undefined]);
const pg = startPostgres();
try {
  await rates("postgres.1-replica", [pg.url]);
  const two = pg.create("two");
  await rates("postgres.2-replicas", [two, two]);
} finally {
  pg.stop();
}
