// A kiln boot server on 127.0.0.1:PORT with a one-group inventory, for the
// boot-script and report rate benchmarks (driven with wrk). Every boot and
// report is committed to the fleet database DB (a SQLite file, default a
// temporary one, or a postgres:// URL) before it is answered. Its profile p
// serves the directory KILN_BENCH_ARTIFACT names, if set, under /artifacts/p/.
//   node bench/boot-server.js PORT [DB] [NAME]
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BootServer } from "../dist/deliver/bootserver.js";
import { openFleet } from "../dist/fleet/open.js";
import { setQuiet } from "../dist/util/log.js";

// One log line per request would measure the terminal, not the server.
setQuiet(true);

const dir = mkdtempSync(join(tmpdir(), "kiln-bench-"));
writeFileSync(
  join(dir, "inventory.yaml"),
  `profiles:\n  p: { artifact: ${JSON.stringify(process.env.KILN_BENCH_ARTIFACT ?? "/nonexistent")} }\ngroups:\n  - { name: g, profile: p }\n`,
);
const port = Number(process.argv[2] ?? 18099);
const fleet = await openFleet(process.argv[3] || join(dir, "machines.sqlite"));
const server = new BootServer({
  inventoryFile: join(dir, "inventory.yaml"),
  publicUrl: "http://bench",
  fleet,
  serverName: process.argv[4] ?? `bench-${port}`,
  host: "127.0.0.1",
  port,
  // wrk asks from one address, which the per-address limit would answer with 429;
  // this measures the script path itself (bench/serve.js measures with the limits on).
  limits: { ratePerSecond: 0 },
});
await server.listen();
process.on("SIGTERM", async () => {
  await server.close();
  await fleet.close();
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
});
process.stdout.write("ready\n");
