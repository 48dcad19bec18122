import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import initSqlJs from "sql.js";
import { afterAll, describe, expect, it } from "vitest";
import { parseReport } from "../../src/deliver/reports.js";
import { openFleet } from "../../src/fleet/open.js";
import { fleetSuite } from "../shared/fleet-suite.js";

const dir = mkdtempSync(join(tmpdir(), "kiln-fleet-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Each store the suite opens is one database file; stores opened together share it.
let n = 0;
let file = join(dir, "fleet-0.sqlite");
fleetSuite("SQLite", (limits, now) => {
  // The suite's first store starts a database; later ones join it unless they set limits.
  if (Object.keys(limits).length) file = join(dir, `fleet-${++n}.sqlite`);
  return openFleet(file, limits, now);
});

describe("fleet database file", () => {
  it("migrates the sql.js discovery file of earlier kilns in place, keeping its machines", async () => {
    const SQL = await initSqlJs();
    const old = new SQL.Database();
    old.run(`CREATE TABLE IF NOT EXISTS machines (
      id TEXT PRIMARY KEY, facts TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
      grp TEXT, profile TEXT, requests INTEGER NOT NULL DEFAULT 1)`);
    old.run("INSERT INTO machines VALUES (?, ?, ?, ?, ?, ?, ?)", [
      "52:54:00:aa:00:01",
      JSON.stringify({ mac: "52:54:00:aa:00:01", serial: "OLD-1" }),
      "2026-11-01T00:00:00.000Z",
      "2026-11-02T00:00:00.000Z",
      "web",
      "base",
      7,
    ]);
    const f = join(dir, "legacy.sqlite");
    writeFileSync(f, old.export());
    const s = await openFleet(f);
    const m = await s.get("52:54:00:aa:00:01");
    expect(m).toMatchObject({ group: "web", profile: "base", requests: 7, boots: [] });
    expect(m!.facts.serial).toBe("OLD-1");
    await s.recordBoot({
      machine: "52:54:00:aa:00:01",
      facts: { mac: "52:54:00:aa:00:01" },
      group: "web",
      profile: "base",
      artifact: null,
      server: "t",
    });
    expect((await s.get("52:54:00:aa:00:01"))!.requests).toBe(8);
    await s.close();
  });

  it("refuses a file that is not a database, naming it", async () => {
    const f = join(dir, "junk.sqlite");
    writeFileSync(f, "this is not sqlite ".repeat(100));
    await expect(openFleet(f)).rejects.toThrow(
      /junk\.sqlite.*not a database|not a database.*junk/s,
    );
  });

  it("refuses a database from a newer kiln", async () => {
    const f = join(dir, "newer.sqlite");
    const s = await openFleet(f);
    await s.close();
    const { DatabaseSync } = await import("node:sqlite");
    const db = new DatabaseSync(f);
    db.exec("UPDATE kiln_meta SET value = '99' WHERE key = 'schema_version'");
    db.close();
    await expect(openFleet(f)).rejects.toThrow(/schema version 99, newer than this kiln/);
  });
});

describe("agent reports", () => {
  it("parse the agent's lines; hostile ones are left out or made printable", () => {
    const r = parseReport(
      [
        "machine_id 0123456789abcdef0123456789abcdef",
        "mac 52:54:00:AA:00:01",
        "mac not-a-mac",
        "portable web 1.0.0",
        "sysext ../../etc 1",
        "portable web 1.0.0 extra",
        "failed sysext tools 2.0.0: sha256 mismatch \u001b[31m<b>",
        "status failed",
      ].join("\n"),
    );
    expect(r.macs).toEqual(["52:54:00:aa:00:01"]);
    expect(r.attached).toEqual([{ kind: "portable", name: "web", version: "1.0.0" }]);
    expect(r.failed).toEqual(["sysext tools 2.0.0: sha256 mismatch ?[31m<b>"]);
    expect(r.ok).toBe(false);
    // An agent from before status lines: ok unless something failed.
    expect(parseReport("machine_id x\nportable web 1.0.0\n").ok).toBe(true);
    expect(parseReport("status ok\nfailed x\n").ok).toBe(false);
  });
});
