// A kiln boot server on 127.0.0.1:PORT with a one-group inventory, for the
// boot-script rate benchmark (bench/run.js drives it with wrk).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BootServer } from "../dist/deliver/bootserver.js";
import { Discovery } from "../dist/deliver/discovery.js";
import { setQuiet } from "../dist/util/log.js";

// One log line per request would measure the terminal, not the server.
setQuiet(true);

const dir = mkdtempSync(join(tmpdir(), "kiln-bench-"));
writeFileSync(
  join(dir, "inventory.yaml"),
  'profiles:\n  p: { artifact: /nonexistent }\ngroups:\n  - { name: g, profile: p, selector: { mac: "52:54:00:00:00:01" } }\n',
);
const server = new BootServer({
  inventoryFile: join(dir, "inventory.yaml"),
  publicUrl: "http://bench",
  discovery: await Discovery.open(join(dir, "machines.sqlite")),
  host: "127.0.0.1",
  port: Number(process.argv[2] ?? 18099),
  // wrk asks from one address, which the per-address limit would answer with 429;
  // this measures the script path itself (bench/serve.js measures with the limits on).
  limits: { ratePerSecond: 0 },
});
await server.listen();
process.on("SIGTERM", () => {
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
});
process.stdout.write("ready\n");
