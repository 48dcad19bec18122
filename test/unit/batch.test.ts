import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BootServer } from "../../src/deliver/bootserver.js";
import { Batcher, QueueFull } from "../../src/fleet/batch.js";
import type { Driver } from "../../src/fleet/driver.js";
import { migrate } from "../../src/fleet/migrations.js";
import { SqlFleetStore } from "../../src/fleet/sql.js";
import { openSqlite } from "../../src/fleet/sqlite.js";
import type { BootEvent, FleetStore } from "../../src/fleet/store.js";

const dir = mkdtempSync(join(tmpdir(), "kiln-batch-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A flush that records what it was given and waits for `gate` (if set) before answering. */
function recorder(gate?: Promise<void>) {
  const batches: number[][] = [];
  const flush = async (items: number[]) => {
    batches.push(items);
    await gate;
    return items.map((i) => i * 10);
  };
  return { batches, flush };
}

describe("Batcher (group commit)", () => {
  it("flushes everything queued together in one batch, each caller its own result", async () => {
    const r = recorder();
    const b = new Batcher(r.flush, { maxBatch: 100, maxPending: 100 });
    const out = await Promise.all([1, 2, 3, 4].map((i) => b.add(i)));
    expect(out).toEqual([10, 20, 30, 40]);
    expect(r.batches).toEqual([[1, 2, 3, 4]]);
    expect(b.pending).toBe(0);
  });

  it("what arrives during a flush goes in the next one; maxBatch splits a long queue", async () => {
    let open!: () => void;
    const r = recorder(new Promise((res) => (open = res)));
    const b = new Batcher(r.flush, { maxBatch: 2, maxPending: 100 });
    const first = b.add(1);
    await new Promise((res) => setImmediate(res));
    expect(r.batches).toEqual([[1]]);
    const later = [2, 3, 4].map((i) => b.add(i));
    expect(b.pending).toBe(4);
    open();
    expect(await Promise.all([first, ...later])).toEqual([10, 20, 30, 40]);
    expect(r.batches).toEqual([[1], [2, 3], [4]]);
  });

  it("a flush that fails rejects every item it took, and the next batch still runs", async () => {
    let calls = 0;
    const b = new Batcher(
      async (items: number[]) => {
        if (calls++ === 0) throw new Error("disk full");
        return items;
      },
      { maxBatch: 100, maxPending: 100 },
    );
    const failed = [1, 2, 3].map((i) => b.add(i));
    for (const p of failed) await expect(p).rejects.toThrow("disk full");
    expect(await b.add(4)).toBe(4);
  });

  it("a flush giving the wrong number of results fails its items rather than mislabel them", async () => {
    const b = new Batcher(async () => [1], { maxBatch: 100, maxPending: 100 });
    const ps = [b.add(1), b.add(2)];
    for (const p of ps) await expect(p).rejects.toThrow(/2 gave 1/);
  });

  it("refuses beyond maxPending (queued and in flight) with QueueFull, at once", async () => {
    let open!: () => void;
    const r = recorder(new Promise((res) => (open = res)));
    const b = new Batcher(r.flush, { maxBatch: 2, maxPending: 3, what: "boots" });
    const ok = [1, 2, 3].map((i) => b.add(i));
    await new Promise((res) => setImmediate(res)); // 1 and 2 in flight, 3 queued
    const refused = b.add(4);
    await expect(refused).rejects.toBeInstanceOf(QueueFull);
    await expect(refused).rejects.toThrow(/3 boots waiting/);
    open();
    expect(await Promise.all(ok)).toEqual([10, 20, 30]);
    // Room again once committed.
    expect(await b.add(5)).toBe(50);
  });

  it("drained() waits for queued and in-flight items", async () => {
    let open!: () => void;
    const r = recorder(new Promise((res) => (open = res)));
    const b = new Batcher(r.flush, { maxBatch: 1, maxPending: 10 });
    const ps = [b.add(1), b.add(2)];
    let done = false;
    const d = b.drained().then(() => (done = true));
    await new Promise((res) => setImmediate(res));
    expect(done).toBe(false);
    open();
    await d;
    expect(await Promise.all(ps)).toEqual([10, 20]);
  });
});

describe("boots through the fleet store's batch", () => {
  const boot = (n: number, o: Partial<BootEvent> = {}): BootEvent => ({
    machine: `52:54:00:00:${(n >> 8).toString(16).padStart(2, "0")}:${(n & 255).toString(16).padStart(2, "0")}`,
    facts: { serial: `S${n}` },
    group: "g",
    profile: "p",
    artifact: null,
    server: "t",
    ...o,
  });
  let n = 0;
  /** A store on a fresh SQLite file whose driver counts its transactions. */
  async function store(limits = {}) {
    const d = openSqlite(join(dir, `b-${++n}.sqlite`));
    await migrate(d, "test");
    const txs = { n: 0 };
    const counting: Driver = {
      ...d,
      tx: (fn) => {
        txs.n++;
        return d.tx(fn);
      },
    };
    return { s: new SqlFleetStore(counting, "test", limits), txs };
  }

  it("commits all the boots asked for together in one transaction, each on record", async () => {
    const { s, txs } = await store();
    const ids = Array.from({ length: 50 }, (_, i) => i);
    // The same machine twice in one batch: both boots counted, the later one's facts kept.
    const out = await Promise.all([
      ...ids.map((i) => s.recordBoot(boot(i))),
      s.recordBoot(boot(7, { facts: { serial: "again" } })),
    ]);
    expect(out.every(Boolean)).toBe(true);
    expect(txs.n).toBe(1);
    expect((await s.list()).length).toBe(50);
    const m = (await s.get(boot(7).machine))!;
    expect(m.requests).toBe(2);
    expect(m.facts.serial).toBe("again");
    expect(m.boots.length).toBe(2);
    await s.close();
  });

  it("a failed batch fails its boots (the caller answers an error), nothing half-written", async () => {
    const { s } = await store();
    await s.recordBoot(boot(1));
    const v = await s.version();
    // A machine id no statement can bind (a function) breaks the transaction midway.
    const bad = boot(2, { machine: (() => {}) as unknown as string });
    const ps = [s.recordBoot(boot(3)), s.recordBoot(bad)];
    for (const p of ps) await expect(p).rejects.toThrow();
    expect(await s.get(boot(3).machine)).toBeUndefined();
    expect(await s.version()).toBe(v);
    expect(await s.recordBoot(boot(4))).toBe(true);
    await s.close();
  });

  it("refuses boots beyond maxPendingBoots with QueueFull; the ones it took are committed", async () => {
    const { s } = await store({ maxPendingBoots: 5 });
    const ps = Array.from({ length: 8 }, (_, i) => s.recordBoot(boot(i)));
    const r = await Promise.allSettled(ps);
    expect(r.filter((x) => x.status === "fulfilled").length).toBe(5);
    for (const x of r.slice(5))
      expect((x as PromiseRejectedResult).reason).toBeInstanceOf(QueueFull);
    expect((await s.list()).length).toBe(5);
    await s.close();
  });

  it("history is trimmed in steps: the newest bootHistory shown, at most twice that stored", async () => {
    const { s } = await store({ bootHistory: 5 });
    for (let i = 0; i < 23; i++)
      await s.recordBoot(boot(1, { artifact: `a${i}`, facts: { serial: String(i) } }));
    const m = (await s.get(boot(1).machine))!;
    expect(m.requests).toBe(23);
    expect(m.boots.map((b) => b.artifact)).toEqual(["a22", "a21", "a20", "a19", "a18"]);
    expect(m.lastBoot?.artifact).toBe("a22");
    await s.close();
  });

  it("the machine cap holds within one batch: beyond it, served but not recorded", async () => {
    const { s } = await store({ maxMachines: 3 });
    const out = await Promise.all([0, 1, 2, 3, 4, 1].map((i) => s.recordBoot(boot(i))));
    expect(out).toEqual([true, true, true, false, false, true]);
    expect((await s.list()).length).toBe(3);
    await s.close();
  });
});

describe("the boot server when its boot is not recorded", () => {
  it("answers 503 with Retry-After when the queue is full, 500 when the commit fails", async () => {
    const inv = join(dir, "inventory.yaml");
    writeFileSync(
      inv,
      "profiles:\n  p: { artifact: /nonexistent }\ngroups:\n  - { name: g, profile: p }\n",
    );
    let failure: Error = new QueueFull("boots", 1);
    const fleet = { recordBoot: () => Promise.reject(failure) } as unknown as FleetStore;
    const server = new BootServer({
      inventoryFile: inv,
      publicUrl: "http://srv",
      fleet,
      host: "127.0.0.1",
      port: 0,
      limits: { ratePerSecond: 0 },
    });
    const port = await server.listen();
    try {
      const url = `http://127.0.0.1:${port}/ipxe?mac=52:54:00:00:00:01`;
      const busy = await fetch(url);
      expect(busy.status).toBe(503);
      expect(busy.headers.get("retry-after")).toBe("1");
      expect(await busy.text()).not.toContain("kernel");
      failure = new Error("disk I/O error");
      const failed = await fetch(url);
      expect(failed.status).toBe(500);
      expect(await failed.text()).not.toContain("kernel");
    } finally {
      await server.close();
    }
  });
});
