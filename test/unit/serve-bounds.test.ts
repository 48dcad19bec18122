import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AdminServer,
  adminTokenFile,
  loadOrCreateAdminToken,
  tokenMatches,
} from "../../src/deliver/admin.js";
import { BootTokens } from "../../src/deliver/boots.js";
import { BootServer } from "../../src/deliver/bootserver.js";
import { fleetLimits, LogLimiter, RateLimiter } from "../../src/deliver/limits.js";
import { openFleet } from "../../src/fleet/open.js";
import type { FleetStore } from "../../src/fleet/store.js";

const dir = mkdtempSync(join(tmpdir(), "kiln-unit-bounds-"));
const MID = "0123456789abcdef0123456789abcdef";
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function clock(start = 1_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe("rate limiter", () => {
  it("allows a burst, then refills at the rate", () => {
    const c = clock();
    const r = new RateLimiter(2, 3, 10, c.now);
    expect([r.take("a"), r.take("a"), r.take("a"), r.take("a")]).toEqual([
      "ok",
      "ok",
      "ok",
      "limited",
    ]);
    expect(r.take("b")).toBe("ok"); // per address
    c.t += 500;
    expect(r.take("a")).toBe("ok");
    expect(r.take("a")).toBe("limited");
  });
  it("its table of addresses is bounded: idle ones are forgotten, else busy", () => {
    const c = clock();
    const r = new RateLimiter(1, 2, 3, c.now);
    for (const k of ["a", "b", "c"]) expect(r.take(k)).toBe("ok");
    expect(r.take("d")).toBe("busy");
    expect(r.size).toBe(3);
    c.t += 5000; // all refilled: idle
    expect(r.take("d")).toBe("ok");
    expect(r.size).toBeLessThanOrEqual(3);
  });
  it("0 means no limit", () => {
    const r = new RateLimiter(0, 1, 1);
    for (let i = 0; i < 100; i++) expect(r.take(String(i))).toBe("ok");
  });
});

describe("log limiter", () => {
  it("writes at most N lines of a kind per window, then says how many it left out", () => {
    const c = clock();
    const out: string[] = [];
    const l = new LogLimiter(3, 1000, c.now, (m) => out.push(m));
    for (let i = 0; i < 100; i++) l.line("flood", `line ${i}`);
    l.line("other", "other kind");
    expect(out).toEqual(["line 0", "line 1", "line 2", "other kind"]);
    c.t += 1000;
    l.line("flood", "after");
    expect(out.slice(4)).toEqual(["flood: 97 more lines like this left out in 1 s", "after"]);
  });
});

describe("per-boot tokens", () => {
  it("are 128-bit, distinct, bounded and expire", () => {
    const c = clock();
    const t = new BootTokens(2, 1000, c.now);
    const boot = { facts: { mac: "52:54:00:00:00:01" }, group: "g", profile: "p" };
    const a = t.issue(boot);
    const b = t.issue(boot);
    expect(a).toMatch(/^[0-9a-f]{32}$/);
    expect(a).not.toBe(b);
    const c3 = t.issue(boot);
    expect(t.size).toBe(2);
    expect(t.get(a)).toBeUndefined();
    expect(t.get(c3)).toEqual(boot);
    c.t += 1001;
    expect(t.get(c3)).toBeUndefined();
    expect(t.get("../x")).toBeUndefined();
  });
  it("a full table evicts in issue order over many rounds (the oldest always first)", () => {
    const c = clock();
    const t = new BootTokens(100, 1_000_000, c.now);
    const boot = { facts: {}, group: "g", profile: "p" };
    const issued: string[] = [];
    for (let i = 0; i < 5000; i++) {
      issued.push(t.issue(boot));
      c.t += 1;
    }
    expect(t.size).toBe(100);
    expect(new Set(issued).size).toBe(5000);
    expect(t.get(issued[4899]!)).toBeUndefined();
    for (const k of issued.slice(4900)) expect(t.get(k)).toEqual(boot);
    // Expiry takes the oldest first too, and stops at the first one still young.
    c.t += 1_000_000 - 50;
    expect(t.get(issued[4949]!)).toBeUndefined();
    expect(t.get(issued[4950]!)).toEqual(boot);
    expect(t.size).toBe(50);
  });
});

describe("admin token", () => {
  it("is made 0600 on first start and read again later", () => {
    const f = adminTokenFile(join(dir, "db", "machines.sqlite"));
    expect(f).toBe(join(dir, "db", "machines.sqlite.admin-token"));
    const t = loadOrCreateAdminToken(f);
    expect(t).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(loadOrCreateAdminToken(f)).toBe(t);
  });
  it("a token file others can read, or that holds something else, is refused", () => {
    const f = join(dir, "loose.admin-token");
    loadOrCreateAdminToken(f);
    chmodSync(f, 0o644);
    expect(() => loadOrCreateAdminToken(f)).toThrow(/readable by others/);
    writeFileSync(join(dir, "junk.admin-token"), "short\n", { mode: 0o600 });
    expect(() => loadOrCreateAdminToken(join(dir, "junk.admin-token"))).toThrow(
      /does not hold a kiln admin token/,
    );
  });
  it("matches only the exact bearer token", () => {
    const t = "a".repeat(43);
    expect(tokenMatches(`Bearer ${t}`, t)).toBe(true);
    for (const h of [undefined, "", t, `Bearer ${t}x`, `Bearer ${t.slice(1)}`, `Basic ${t}`])
      expect(tokenMatches(h, t), String(h)).toBe(false);
  });
});

/** A raw request (fetch would normalise or refuse some of what clients send). */
function raw(
  port: number,
  path: string,
  o: { method?: string; headers?: Record<string, string>; body?: string; local?: string } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const r = request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: o.method ?? "GET",
        headers: o.headers ?? {},
        ...(o.local ? { localAddress: o.local } : {}),
      },
      (resp) => {
        let body = "";
        resp.on("data", (b) => {
          body += b;
        });
        resp.on("end", () => res({ status: resp.statusCode ?? 0, body }));
      },
    );
    r.on("error", rej);
    r.end(o.body);
  });
}

describe("boot server bounds", () => {
  let server: BootServer;
  let admin: AdminServer;
  let port = 0;
  let adminPort = 0;
  const token = "b".repeat(43);
  let fleet: FleetStore;

  beforeAll(async () => {
    mkdirSync(join(dir, "bundle"));
    mkdirSync(join(dir, "outside"));
    writeFileSync(join(dir, "bundle", "vmlinuz"), "kernel");
    writeFileSync(join(dir, "outside", "secret"), "do not serve");
    symlinkSync(join(dir, "outside", "secret"), join(dir, "bundle", "abs-link"));
    symlinkSync("../outside/secret", join(dir, "bundle", "rel-link"));
    symlinkSync("../outside", join(dir, "bundle", "dir-link"));
    symlinkSync("vmlinuz", join(dir, "bundle", "inner-link"));
    writeFileSync(join(dir, "web_1.0.0.raw"), "image");
    writeFileSync(
      join(dir, "inventory.yaml"),
      `profiles:
  web: { artifact: ./bundle, metadata: { hostname: web1 }, addons: [{ kind: portable, path: ./web_1.0.0.raw }] }
groups:
  - { name: g, profile: web }
`,
    );
    const limits = { ratePerSecond: 5, burst: 20, maxDiscoveryRows: 3, maxReportBytes: 1000 };
    fleet = await openFleet(join(dir, "bounds.sqlite"), fleetLimits(limits));
    server = new BootServer({
      inventoryFile: join(dir, "inventory.yaml"),
      publicUrl: "http://srv:1",
      fleet,
      host: "127.0.0.1",
      port: 0,
      limits,
    });
    port = await server.listen();
    admin = new AdminServer({
      token,
      reports: server.reports,
      fleet,
      host: "127.0.0.1",
      port: 0,
    });
    adminPort = await admin.listen();
  });
  afterAll(async () => {
    await admin.close();
    await server.close();
    await fleet.close();
  });

  it("refuses symlinks that lead out of an artifact directory", async () => {
    for (const p of ["abs-link", "rel-link", "dir-link/secret"]) {
      const r = await raw(port, `/artifacts/web/${p}`, { local: "127.0.1.1" });
      expect(r.status, p).toBe(400);
      expect(r.body).not.toContain("do not serve");
    }
    const ok = await raw(port, "/artifacts/web/inner-link", { local: "127.0.1.1" });
    expect(ok).toEqual({ status: 200, body: "kernel" });
  });

  it("malformed percent-escapes are 400, not 500", async () => {
    for (const p of [
      "/metadata/%E0%A4%A.json",
      "/cloud-init/%zz/user-data",
      "/artifacts/web/%E0%A4%A",
      "http://[/ipxe",
    ]) {
      const r = await raw(port, p, { local: "127.0.1.2" });
      expect(r.status, p).toBe(400);
    }
  });

  it("validates machine_id everywhere and never echoes a bad one", async () => {
    const inj = `0123%0Aportable%20evil%201%20http://x/y%20${"0".repeat(64)}`;
    for (const p of [`/assignment?machine_id=${inj}`, `/ipxe?mac=52:54:00:00:00:05&machine_id=x`]) {
      const r = await raw(port, p, { local: "127.0.1.3" });
      expect(r.status, p).toBe(400);
      expect(r.body).not.toContain("evil");
    }
    const post = await raw(port, `/report?machine_id=${inj}`, {
      method: "POST",
      body: "x",
      local: "127.0.1.3",
    });
    expect(post.status).toBe(400);
    const good = await raw(port, `/assignment?machine_id=${MID}`, { local: "127.0.1.3" });
    expect(good.status).toBe(200);
    expect(good.body).toContain(`# kiln assignment for ${MID}: group g`);
  });

  it("reports over the byte bound are 413; reports are not readable on the boot listener", async () => {
    const big = await raw(port, `/report?machine_id=${MID}`, {
      method: "POST",
      body: "x".repeat(1001),
      local: "127.0.1.4",
    });
    expect(big.status).toBe(413);
    const ok = await raw(port, `/report?machine_id=${MID}`, {
      method: "POST",
      body: "portable web 1.0.0",
      local: "127.0.1.4",
    });
    expect(ok.status).toBe(204);
    expect((await raw(port, "/reports.json", { local: "127.0.1.4" })).status).toBe(404);
  });

  it("the admin listener wants the token", async () => {
    expect((await raw(adminPort, "/reports.json")).status).toBe(401);
    expect(
      (
        await raw(adminPort, "/reports.json", {
          headers: { Authorization: `Bearer ${"c".repeat(43)}` },
        })
      ).status,
    ).toBe(401);
    const r = await raw(adminPort, "/reports.json", {
      headers: { Authorization: `Bearer ${token}` },
    });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)[MID].state).toBe("portable web 1.0.0");
    const m = await raw(adminPort, "/machines.json", {
      headers: { Authorization: `Bearer ${token}` },
    });
    expect(m.status).toBe(200);
    expect(Array.isArray(JSON.parse(m.body))).toBe(true);
  });

  it("one address that asks too fast gets 429; another address is still served", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++)
      statuses.push((await raw(port, "/boot.ipxe", { local: "127.0.2.1" })).status);
    expect(statuses.slice(0, 20).every((s) => s === 200)).toBe(true);
    expect(statuses.slice(20)).toContain(429);
    expect((await raw(port, "/boot.ipxe", { local: "127.0.2.2" })).status).toBe(200);
    // Artifacts are not rate limited (large files, resumed with Range).
    expect((await raw(port, "/artifacts/web/vmlinuz", { local: "127.0.2.1" })).status).toBe(200);
  });

  it("discovery rows are capped; a machine beyond the cap still gets its script", async () => {
    for (let i = 0; i < 5; i++) {
      const r = await raw(port, `/ipxe?mac=52:54:00:00:01:0${i}`, { local: "127.0.3.1" });
      expect(r.body).toContain("kernel http://srv:1/artifacts/web/vmlinuz");
    }
    expect((await fleet.list()).length).toBe(3);
    // A known machine is still updated.
    await raw(port, "/ipxe?mac=52:54:00:00:01:00&serial=S9", { local: "127.0.3.1" });
    expect((await fleet.get("52:54:00:00:01:00"))?.facts.serial).toBe("S9");
  });
});
