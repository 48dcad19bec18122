import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BootEvent, FleetLimits, FleetStore, ReportEvent } from "../../src/fleet/store.js";
import { machineState } from "../../src/fleet/store.js";

/**
 * One suite both fleet backends pass: SQLite in the unit tests, PostgreSQL in
 * the integration tests (a real server from Debian's package). `open` makes
 * an empty store with the given limits; two stores from one `open` share
 * the database, as two replicas do.
 */
export function fleetSuite(
  name: string,
  open: (limits: Partial<FleetLimits>, now?: () => number) => Promise<FleetStore>,
): void {
  const boot = (machine: string, o: Partial<BootEvent> = {}): BootEvent => ({
    machine,
    facts: { mac: machine, serial: `S-${machine.slice(-2)}` },
    group: "web",
    profile: "base",
    artifact: "fleet-base 1.0.0",
    server: "a:8080",
    ...o,
  });
  const report = (agent: string, o: Partial<ReportEvent> = {}): ReportEvent => ({
    agent,
    machine: null,
    from: "10.0.0.9",
    body: `machine_id ${agent}\nportable web 1.0.0\n`,
    attached: [{ kind: "portable", name: "web", version: "1.0.0" }],
    failed: [],
    ok: true,
    server: "a:8080",
    ...o,
  });
  const agent = (n: number) => n.toString(16).padStart(32, "0");
  const mac = (n: number) => `52:54:00:00:00:${n.toString(16).padStart(2, "0")}`;

  describe(`fleet store (${name})`, () => {
    let s: FleetStore;
    let other: FleetStore;
    const opened: FleetStore[] = [];
    const fresh = async (limits: Partial<FleetLimits> = {}) => {
      const st = await open(limits);
      opened.push(st);
      return st;
    };
    beforeAll(async () => {
      s = await fresh({ maxMachines: 5, maxReports: 3, bootHistory: 3, reportHistory: 2 });
    });
    afterAll(async () => {
      for (const st of opened) await st.close();
    });

    it("records boots: facts, group, profile, history newest first and bounded", async () => {
      for (let i = 0; i < 5; i++)
        expect(await s.recordBoot(boot(mac(1), { artifact: `fleet-base 1.0.${i}` }))).toBe(true);
      const m = await s.get(mac(1));
      expect(m).toMatchObject({ id: mac(1), group: "web", profile: "base", requests: 5 });
      expect(m!.facts.serial).toBe("S-01");
      expect(m!.boots.map((b) => b.artifact)).toEqual([
        "fleet-base 1.0.4",
        "fleet-base 1.0.3",
        "fleet-base 1.0.2",
      ]);
      expect(m!.lastBoot?.artifact).toBe("fleet-base 1.0.4");
      expect(machineState(m!)).toBe("booted");
    });

    it("a machine beyond maxMachines is not recorded; known ones still are", async () => {
      for (let i = 2; i <= 5; i++) expect(await s.recordBoot(boot(mac(i)))).toBe(true);
      expect(await s.recordBoot(boot(mac(6)))).toBe(false);
      expect(await s.get(mac(6))).toBeUndefined();
      expect(await s.recordBoot(boot(mac(2), { group: null, profile: null }))).toBe(true);
      expect((await s.list()).length).toBe(5);
      expect(machineState((await s.get(mac(2)))!)).toBe("unmatched");
    });

    it("links a report to the machine it lists; failures make it failing", async () => {
      expect(await s.findMachine(["aa:bb:cc:dd:ee:ff", mac(3)])).toBe(mac(3));
      expect(await s.findMachine(["aa:bb:cc:dd:ee:ff"])).toBeNull();
      await s.recordReport(report(agent(1), { machine: mac(3) }));
      expect(machineState((await s.get(mac(3)))!)).toBe("reporting");
      await s.recordReport(
        report(agent(1), { machine: mac(3), ok: false, failed: ["sysext tools 2.0: sha256"] }),
      );
      const m = (await s.get(mac(3)))!;
      expect(machineState(m)).toBe("failing");
      expect(m.report?.failed).toEqual(["sysext tools 2.0: sha256"]);
      expect(m.reports.map((r) => r.ok)).toEqual([false, true]);
      await s.recordReport(report(agent(1), { machine: mac(3) }));
      expect((await s.get(mac(3)))!.reports.length).toBe(2);
    });

    it("filters by group, profile, state and last seen", async () => {
      expect((await s.list({ group: "web" })).map((m) => m.id)).not.toContain(mac(2));
      expect((await s.list({ state: "unmatched" })).map((m) => m.id)).toEqual([mac(2)]);
      expect((await s.list({ state: "reporting" })).map((m) => m.id)).toEqual([mac(3)]);
      expect((await s.list({ profile: "nope" })).length).toBe(0);
      expect((await s.list({ seenWithinMs: 60_000 })).length).toBe(5);
    });

    it("keeps at most maxReports agents, the longest silent going first", async () => {
      for (let i = 2; i <= 4; i++) await s.recordReport(report(agent(i)));
      const agents = (await s.reports()).map(([id]) => id);
      expect(agents).toEqual([agent(2), agent(3), agent(4)]);
      expect((await s.reports())[0]![1].state).toContain("portable web 1.0.0");
    });

    it("bounds the bytes of kept bodies, the oldest going first", async () => {
      const b = await fresh({ maxReportTotalBytes: 250 });
      await b.recordReport(report(agent(1), { body: "x".repeat(100) }));
      await b.recordReport(report(agent(2), { body: "x".repeat(100) }));
      await b.recordReport(report(agent(3), { body: "é".repeat(50) })); // 100 bytes
      const kept = new Map(await b.reports());
      expect(kept.get(agent(1))?.state).toBe("");
      expect(kept.get(agent(3))?.state).toBe("é".repeat(50));
    });

    it("drops reports past their age", async () => {
      let t = Date.parse("2026-01-01T00:00:00Z");
      const aged = await open({ maxReportAgeMs: 10_000 }, () => t);
      opened.push(aged);
      await aged.recordReport(report(agent(9)));
      t += 5_000;
      await aged.recordReport(report(agent(10)));
      expect((await aged.reports()).map(([id]) => id)).toContain(agent(9));
      // Expiry runs at most once a minute, when a report comes in.
      t += 61_000;
      await aged.recordReport(report(agent(11)));
      expect((await aged.reports()).map(([id]) => id)).toEqual([agent(11)]);
    });

    it("forgets a machine with its history; it is new when it asks again", async () => {
      expect(await s.forget(mac(3))).toBe(true);
      expect(await s.forget(mac(3))).toBe(false);
      expect(await s.get(mac(3))).toBeUndefined();
      expect(await s.recordBoot(boot(mac(3)))).toBe(true);
      expect((await s.get(mac(3)))!.requests).toBe(1);
    });

    it("an install: begun, advanced, ended; late progress ignored; reinstall forgets it", async () => {
      const m = mac(5);
      const u = { machine: m, server: "a:8080", image: "web 1.0" };
      await s.recordInstall({ ...u, state: "installing", start: true, total: 1000 });
      await s.recordInstall({ ...u, state: "installing", bytes: 400, rate: 200 });
      expect(await s.install(m)).toMatchObject({ state: "installing", bytes: 400, total: 1000 });
      expect(machineState((await s.get(m))!)).toBe("installing");
      await s.recordInstall({ ...u, state: "failed", reason: "sha256 mismatch" });
      await s.recordInstall({ ...u, state: "installing", bytes: 900 });
      expect(await s.install(m)).toMatchObject({ state: "failed", reason: "sha256 mismatch" });
      expect(machineState((await s.get(m))!)).toBe("install-failed");
      // The next network boot begins again, and this time it ends well.
      await s.recordInstall({ ...u, state: "installing", start: true, total: 1000 });
      expect((await s.install(m))?.bytes).toBe(0);
      await s.recordInstall({ ...u, state: "installed", bytes: 1000 });
      const d = (await s.get(m))!;
      expect(d.install).toMatchObject({ state: "installed", bytes: 1000, reason: null });
      // History is bounded like boots (3 in this store).
      expect(d.installs.map((e) => e.state)).toEqual(["installed", "installing", "failed"]);
      expect(d.installs[0]!.seconds).toBeGreaterThanOrEqual(0);
      expect(machineState(d)).toBe("installed");
      expect(await s.resetInstall(m, "cli")).toBe(true);
      expect(await s.resetInstall(m, "cli")).toBe(false);
      expect(await s.install(m)).toBeUndefined();
      // A machine the fleet did not record (past the cap) gets no install row either.
      await s.recordInstall({
        ...u,
        machine: "52:54:00:ff:ff:ff",
        state: "installing",
        start: true,
      });
      expect(await s.install("52:54:00:ff:ff:ff")).toBeUndefined();
    });

    it("the change counter grows with every write", async () => {
      const v0 = await s.version();
      await s.recordBoot(boot(mac(4)));
      const v1 = await s.version();
      expect(v1).not.toBe(v0);
      await s.forget(mac(4));
      expect(await s.version()).not.toBe(v1);
    });

    it("two stores on one database (two replicas) see each other's writes at once", async () => {
      other = await fresh();
      const a = await fresh();
      await a.recordBoot(boot(mac(40), { server: "a:8080" }));
      expect((await other.get(mac(40)))?.lastBoot?.server).toBe("a:8080");
      await other.recordBoot(boot(mac(40), { server: "b:8080" }));
      const m = (await a.get(mac(40)))!;
      expect(m.requests).toBe(2);
      expect(m.boots.map((x) => x.server)).toEqual(["b:8080", "a:8080"]);
    });

    it("concurrent boots of one new machine through two replicas: one row, every boot counted", async () => {
      const a = await fresh();
      const b = await fresh();
      await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 ? a : b).recordBoot(boot(mac(50), { server: i % 2 ? "a" : "b" })),
        ),
      );
      expect((await a.get(mac(50)))!.requests).toBe(20);
    });

    it("boots asked for at once go in batches; two replicas' batches over the same machines, in opposite orders, all commit", async () => {
      const a = await fresh();
      const b = await fresh();
      const ids = Array.from({ length: 30 }, (_, i) => mac(100 + i));
      const round = () =>
        Promise.all([
          ...ids.map((id) => a.recordBoot(boot(id, { server: "a" }))),
          ...[...ids].reverse().map((id) => b.recordBoot(boot(id, { server: "b" }))),
        ]);
      const out = [...(await round()), ...(await round())];
      expect(out.every(Boolean)).toBe(true);
      for (const id of ids) {
        const m = (await a.get(id))!;
        expect(m.requests).toBe(4);
        expect(m.boots.map((x) => x.server).sort()).toEqual(["a", "a", "b", "b"]);
      }
    });
  });
}
