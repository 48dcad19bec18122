import { type ChildProcess, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openFleet } from "../../src/fleet/open.js";
import { startPostgres, type TempPostgres } from "../support/postgres.js";
import { KILN, until } from "./helpers.js";
import { Lan } from "./lan.js";

// Fleet state that survives its servers: kiln serve on SQLite killed with
// SIGKILL mid-stream loses nothing it acknowledged (and leaves no dnsmasq);
// two replicas on one PostgreSQL see each other's machines and reports, and
// the second serves a real iPXE client's next boot when the first is killed.
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-fleet-"));
const lan = new Lan(`kf${process.pid % 10000}`, OUT);
let pg: TempPostgres | undefined;

afterAll(() => {
  lan.close();
  pg?.stop();
  rmSync(OUT, { recursive: true, force: true });
});

function kilnJson<T>(...args: string[]): T {
  const r = spawnSync(process.execPath, [KILN, ...args, "--json"], {
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`kiln ${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** `kiln serve` in namespace `ns`; resolves once it serves, with its process and log. */
async function serve(ns: string, args: string[]): Promise<{ p: ChildProcess; log: () => string }> {
  let log = "";
  const p = lan.run(
    ns,
    process.execPath,
    [KILN, "serve", "--interface", "eth0", "--rate-limit", "0", ...args],
    (t) => {
      log += t;
    },
  );
  await until("kiln serve to start", () => /dnsmasq: DHCP (off|proxy)/.test(log), 30_000);
  return { p, log: () => log };
}

/** curl in a namespace: status code and body. */
function curl(ns: string, url: string, o: { data?: string; token?: string } = {}) {
  const r = spawnSync(
    "ip",
    [
      "netns",
      "exec",
      ns,
      "curl",
      "-s",
      "-w",
      "\n%{http_code}",
      ...(o.token ? ["-H", `Authorization: Bearer ${o.token}`] : []),
      ...(o.data !== undefined ? ["-X", "POST", "--data-binary", o.data] : []),
      url,
    ],
    { encoding: "utf8" },
  );
  const i = r.stdout.lastIndexOf("\n");
  return { status: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i) };
}

// "f" first: padding alone would give 10 and 170 one id.
const agentId = (i: number) => `f${i.toString(16)}`.padStart(32, "0");
const macOf = (i: number) =>
  `52:54:00:79:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;

describe("SQLite fleet database", () => {
  it("SIGKILL mid-stream: every acknowledged boot and report is there after a restart; dnsmasq goes with kiln serve", async () => {
    const ns = lan.host("solo", "10.78.0.2/24");
    const inv = join(OUT, "solo.yaml");
    writeFileSync(inv, "profiles:\n  base: {}\ngroups:\n  - { name: all, profile: base }\n");
    const db = join(OUT, "solo.sqlite");
    const a = await serve(ns, ["--inventory", inv, "--dhcp", "off", "--db", db]);
    expect(lan.processes(ns).filter((c) => c === "dnsmasq")).toHaveLength(1);
    // A client that boots and reports as fast as it can, 8 at a time, printing each acknowledgement.
    const client = join(OUT, "client.mjs");
    writeFileSync(
      client,
      `const base = "http://10.78.0.2:8080";
let i = 0;
async function one() {
  const n = i++;
  if (n >= 4000) return false;
  const mac = "52:54:00:79:" + (n >> 8).toString(16).padStart(2, "0") + ":" + (n & 255).toString(16).padStart(2, "0");
  const agent = ("f" + n.toString(16)).padStart(32, "0");
  const b = await fetch(base + "/ipxe?mac=" + mac + "&serial=S" + n);
  await b.text();
  if (b.status === 200) console.log("B " + n);
  const r = await fetch(base + "/report?machine_id=" + agent, { method: "POST", body: "machine_id " + agent + "\\nmac " + mac + "\\nportable web 1.0." + n + "\\nstatus ok\\n" });
  await r.text();
  if (r.status === 204) console.log("R " + n);
  return true;
}
async function worker() { try { while (await one()); } catch { process.exit(0); } }
await Promise.all(Array.from({ length: 8 }, worker));
`,
    );
    const acked = { B: new Set<number>(), R: new Set<number>() };
    let partial = "";
    const c = lan.run(ns, process.execPath, [client], (t) => {
      const lines = (partial + t).split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) {
        const m = /^([BR]) (\d+)$/.exec(l);
        if (m) acked[m[1] as "B" | "R"].add(Number(m[2]));
      }
    });
    await until("300 acknowledged boots", () => acked.B.size >= 300, 120_000, 20);
    a.p.kill("SIGKILL");
    // Its dnsmasq goes with it: no orphan keeps serving the dead server's configuration.
    await until("dnsmasq to go", () => !lan.processes(ns).includes("dnsmasq"), 5000, 100);
    await until("the client to stop", () => c.exitCode !== null, 30_000);
    expect(acked.B.size).toBeGreaterThanOrEqual(300);
    expect(acked.B.size).toBeLessThan(4000); // killed mid-stream, not after

    const b = await serve(ns, ["--inventory", inv, "--dhcp", "off", "--db", db]);
    expect(lan.processes(ns).filter((x) => x === "dnsmasq")).toHaveLength(1);
    const fleet = await openFleet(db);
    try {
      const known = new Set((await fleet.list()).map((m) => m.id));
      const lostBoots = [...acked.B].filter((n) => !known.has(macOf(n)));
      const agents = new Set((await fleet.reports()).map(([id]) => id));
      const lostReports = [...acked.R].filter((n) => !agents.has(agentId(n)));
      expect({ lostBoots, lostReports }).toEqual({ lostBoots: [], lostReports: [] });
      console.log(
        `fleet: SIGKILL after ${acked.B.size} acknowledged boots, ${acked.R.size} reports: all there`,
      );
      // A report names its machine by MAC: linked, with what it attached.
      const n = [...acked.R][0]!;
      expect((await fleet.get(macOf(n)))?.report?.attached[0]).toMatchObject({
        name: "web",
        version: `1.0.${n}`,
      });
    } finally {
      await fleet.close();
    }
    b.p.kill("SIGTERM");
    await until("kiln serve to stop", () => b.p.exitCode !== null, 10_000);
    expect(lan.processes(ns)).toEqual([]);
  }, 240_000);
});

describe("two kiln serve replicas on one PostgreSQL", () => {
  it("see each other's machines and reports; the survivor serves the next boot of a real iPXE client", async () => {
    pg = startPostgres();
    const site = lan.host("site", "10.78.1.1/24");
    const ra = lan.host("ra", "10.78.1.2/24");
    const rb = lan.host("rb", "10.78.1.3/24");
    lan.run(site, "dnsmasq", [
      "--keep-in-foreground",
      "--port=0",
      "--interface=eth0",
      "--bind-interfaces",
      "--dhcp-range=10.78.1.100,10.78.1.200,1h",
      `--dhcp-leasefile=${join(OUT, "site.leases")}`,
      "--log-facility=-",
      "--user=root",
    ]);
    const inv = join(OUT, "replicas.yaml");
    writeFileSync(
      inv,
      `profiles:\n  base: {}\ngroups:\n  - { name: rack1, profile: base, selector: { serial: RACK1-7 } }\n`,
    );
    const token = join(OUT, "admin-token");
    const common = ["--inventory", inv, "--db", pg.url, "--admin-token-file", token];
    const a = await serve(ra, [...common, "--name", "replica-a"]);
    const mac = "52:54:00:78:00:07";

    // A real iPXE client (QEMU, BIOS, TCG) boots through replica A's proxy-DHCP.
    await lan.client({
      mac,
      serial: "RACK1-7",
      done: (con) => /profile base has nothing to boot/.test(con),
    });
    type Shown = {
      id: string;
      group: string;
      requests: number;
      boots: { server: string }[];
      report: { attached: { version: string }[] } | null;
    };
    const first = kilnJson<Shown>("machines", "show", mac, "--db", pg.url);
    expect(first).toMatchObject({ group: "rack1", requests: 1 });
    expect(first.boots[0]?.server).toBe("replica-a");
    expect(kilnJson<{ id: string }[]>("machines", "ls", "--db", pg.url).map((m) => m.id)).toEqual([
      mac,
    ]);

    // Replica B joins: it knows the machine at once, from the database.
    const b = await serve(rb, [...common, "--name", "replica-b"]);
    const t = readFileSync(token, "utf8").trim();
    const listed = curl(rb, "http://127.0.0.1:8079/machines.json", { token: t });
    expect(listed.status).toBe(200);
    expect((JSON.parse(listed.body) as { id: string }[]).map((m) => m.id)).toEqual([mac]);

    // A acknowledges a report and is killed at once; B has it.
    const agent = "0123456789abcdef0123456789abcdef";
    const sent = curl(ra, `http://10.78.1.2:8080/report?machine_id=${agent}`, {
      data: `machine_id ${agent}\nmac ${mac}\nportable web 2.1.0\nstatus ok\n`,
    });
    a.p.kill("SIGKILL");
    expect(sent.status).toBe(204);
    const reports = curl(rb, "http://127.0.0.1:8079/reports.json", { token: t });
    expect(JSON.parse(reports.body)[agent]?.state).toContain("portable web 2.1.0");
    await until("replica A's dnsmasq to go", () => !lan.processes(ra).includes("dnsmasq"), 5000);

    // The machine boots again: B answers, and the history says so.
    await lan.client({
      mac,
      serial: "RACK1-7",
      done: (con) => /profile base has nothing to boot/.test(con),
    });
    const again = kilnJson<Shown>("machines", "show", mac, "--db", pg.url);
    expect(again.requests).toBe(2);
    expect(again.boots.map((x) => x.server)).toEqual(["replica-b", "replica-a"]);
    expect(again.report?.attached[0]?.version).toBe("2.1.0");
    b.p.kill("SIGTERM");
  }, 600_000);
});
