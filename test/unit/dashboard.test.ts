import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatList } from "../../src/deliver/addonlist.js";
import { AddonService } from "../../src/deliver/addons.js";
import {
  AdminServer,
  MAX_FORM_BYTES,
  SESSION_COOKIE,
  sessionCookie,
  sessionMatches,
} from "../../src/deliver/admin.js";
import {
  addonDrift,
  esc,
  orderMachines,
  renderFleetFragment,
  renderFleetPage,
  renderLoginPage,
  renderMachinePage,
} from "../../src/deliver/dashboard.js";
import { loadInventory } from "../../src/deliver/inventory.js";
import { DEFAULT_LIMITS, LogLimiter } from "../../src/deliver/limits.js";
import { ReportReceiver } from "../../src/deliver/reports.js";
import { openFleet } from "../../src/fleet/open.js";
import type { Attached, FleetStore, MachineDetail, MachineSummary } from "../../src/fleet/store.js";

const dir = mkdtempSync(join(tmpdir(), "kiln-unit-dash-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HOSTILE = `<script>alert("x")</script>`;

function machine(id: string, o: Partial<MachineSummary> = {}): MachineSummary {
  return {
    id,
    facts: { mac: id },
    firstSeen: "2026-12-01T10:00:00.000Z",
    lastSeen: "2026-12-01T10:00:00.000Z",
    group: "web-rack",
    profile: "web",
    requests: 1,
    install: null,
    lastBoot: {
      at: "2026-12-01T10:00:00.000Z",
      group: "web-rack",
      profile: "web",
      artifact: "web 1.2.0",
      server: "10.0.0.2:8080",
    },
    report: null,
    ...o,
  };
}

const report = (attached: Attached[], failed: string[] = []) => ({
  agent: "a".repeat(32),
  at: "2026-12-01T10:01:00.000Z",
  from: "10.0.0.9",
  attached,
  failed,
  ok: !failed.length,
});

const web = (version: string): Attached => ({ kind: "portable", name: "web", version });
const assigned = (p: string) => (p === "web" ? [web("2.0.0")] : []);

describe("dashboard rendering", () => {
  it("escapes everything a client can claim", () => {
    expect(esc(`<a href="x" onclick='y'>&`)).toBe(
      "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;",
    );
    const m = machine(`52:54:00:00:00:01`, {
      facts: { mac: "52:54:00:00:00:01", hostname: HOSTILE, serial: `"><img src=x onerror=1>` },
      group: HOSTILE,
      profile: HOSTILE,
      lastBoot: { at: HOSTILE, group: null, profile: null, artifact: HOSTILE, server: HOSTILE },
      report: report([{ kind: "portable", name: HOSTILE, version: HOSTILE }], [HOSTILE]),
    });
    const detail: MachineDetail = {
      ...m,
      boots: [m.lastBoot!],
      reports: [m.report!],
      installs: [],
      id: `x"><script>1</script>`,
    };
    for (const html of [
      renderFleetFragment([m], () => [{ kind: "sysext", name: HOSTILE, version: HOSTILE }]),
      renderFleetPage([{ ...m, id: HOSTILE }], assigned, `1"><script>`),
      renderMachinePage(detail, assigned, "7"),
      renderLoginPage(HOSTILE),
    ]) {
      expect(html).not.toContain("<script>alert");
      expect(html).not.toContain("<img");
      expect(html).not.toMatch(/<script>(?!<\/script>)/);
      // The page's only script is the served one.
      expect(html.match(/<script/g)?.length ?? 0).toBeLessThanOrEqual(1);
    }
    expect(renderFleetFragment([m], assigned)).toContain("&lt;script&gt;alert(&quot;x&quot;)");
    expect(renderMachinePage(detail, assigned, "7")).toContain(
      `data-fragment="/machines/x%22%3E%3Cscript%3E1%3C%2Fscript%3E?fragment=1"`,
    );
  });

  it("shows attached add-ons against what the inventory assigns", () => {
    expect(
      addonDrift(
        [
          web("1.0.0"),
          { kind: "sysext", name: "tools", version: "3" },
          { kind: "portable", name: "db", version: "1" },
        ],
        [
          web("2.0.0"),
          { kind: "portable", name: "db", version: "1" },
          { kind: "portable", name: "log", version: "4" },
        ],
      ).map((d) => [d.name, d.state, d.attached, d.assigned]),
    ).toEqual([
      ["db", "ok", "1", "1"],
      ["log", "missing", undefined, "4"],
      ["tools", "extra", "3", undefined],
      ["web", "drift", "1.0.0", "2.0.0"],
    ]);
    const html = renderFleetFragment(
      [
        machine("52:54:00:00:00:01", { report: report([web("1.0.0")]) }),
        machine("52:54:00:00:00:02", { report: report([web("2.0.0")]) }),
      ],
      assigned,
    );
    expect(html).toMatch(/<li class="drift">[\s\S]*web<\/span> 1\.0\.0 → 2\.0\.0 assigned<\/li>/);
    expect(html).toMatch(/<li class="ok">[\s\S]*web<\/span> 2\.0\.0<\/li>/);
    // No report yet: what it is meant to get.
    expect(renderFleetFragment([machine("52:54:00:00:00:03")], assigned)).toContain(
      "no report; assigned</span> web 2.0.0",
    );
  });

  it("lists unmatched machines first, then failing ones, then the rest; counts by state and group", () => {
    const ms = [
      machine("52:54:00:00:00:01", { report: report([web("2.0.0")]) }),
      machine("52:54:00:00:00:02", { group: null, profile: null }),
      machine("52:54:00:00:00:03"),
      machine("52:54:00:00:00:04", { report: report([], ["attach web: no such image"]) }),
      machine("52:54:00:00:00:05", {
        group: null,
        profile: null,
        lastSeen: "2026-12-01T11:00:00.000Z",
      }),
      machine("52:54:00:00:00:06", { group: "db" }),
    ];
    expect(orderMachines(ms).map((m) => m.id.slice(-1))).toEqual(["5", "2", "4", "1", "3", "6"]);
    const html = renderFleetFragment(ms, assigned);
    const rows = [...html.matchAll(/data-machine="([^"]+)" data-state="([a-z]+)"/g)].map(
      (m) => `${m[1]!.slice(-1)} ${m[2]}`,
    );
    expect(rows).toEqual([
      "5 unmatched",
      "2 unmatched",
      "4 failing",
      "1 reporting",
      "3 booted",
      "6 booted",
    ]);
    expect(html).toContain("6 machines");
    expect(html).toMatch(/data-state="unmatched">[\s\S]*?<b>2<\/b>/);
    expect(html).toMatch(/data-state="failing">[\s\S]*?<b>1<\/b>/);
    expect(html).toMatch(/web-rack <b>3<\/b>/);
    expect(html).toMatch(/db <b>1<\/b>/);
    expect(html).toMatch(/\(no group\)<\/span> <b>2<\/b>/);
    expect(html).toContain("<li>attach web: no such image</li>");
    expect(html).toContain("web 1.2.0 <span");
    expect(html).toContain("via 10.0.0.2:8080");
  });
});

describe("what the inventory assigns", () => {
  it("is the signed list's entries when there is one, else the inventory's NAME_VERSION.raw", () => {
    const inv = join(dir, "assign");
    const file = join(inv, "inventory.yaml");
    mkdirSync(inv);
    writeFileSync(
      file,
      `profiles:
  web: { addons: [{ kind: portable, path: ./web_1.0.0.raw }, { kind: sysext, path: ./x/tools_3.raw }] }
  bare: {}
groups: []
`,
    );
    const a = new AddonService(() => loadInventory(file), inv, "http://srv:1");
    expect(a.assigned("web")).toEqual([
      { kind: "portable", name: "web", version: "1.0.0" },
      { kind: "sysext", name: "tools", version: "3" },
    ]);
    expect(a.assigned("bare")).toEqual([]);
    expect(a.assigned("nope")).toEqual([]);
    writeFileSync(
      join(inv, "addons.list"),
      formatList({
        serial: "1",
        profiles: ["web"],
        entries: [
          {
            profile: "web",
            kind: "portable",
            name: "web",
            version: "2.0.0",
            sha256: "a".repeat(64),
          },
        ],
      }),
    );
    writeFileSync(join(inv, "addons.list.sig"), "sig");
    expect(a.assigned("web")).toEqual([{ kind: "portable", name: "web", version: "2.0.0" }]);
    // Left out of the signed list: agents are told nothing, so nothing is assigned.
    expect(a.assigned("bare")).toEqual([]);
  });
});

describe("dashboard auth and live updates", () => {
  const token = "t".repeat(43);
  let fleet: FleetStore;
  let admin: AdminServer;
  let base = "";

  beforeAll(async () => {
    fleet = await openFleet(join(dir, "dash.sqlite"));
    const reports = new ReportReceiver(fleet, DEFAULT_LIMITS, new LogLimiter(), "test");
    admin = new AdminServer({
      token,
      reports,
      fleet,
      host: "127.0.0.1",
      port: 0,
      assigned,
      maxEventClients: 2,
      pollMs: 50,
      heartbeatMs: 100,
    });
    base = `http://127.0.0.1:${await admin.listen()}`;
    await fleet.recordBoot({
      machine: "52:54:00:00:00:01",
      facts: { mac: "52:54:00:00:00:01", hostname: HOSTILE },
      group: "web-rack",
      profile: "web",
      artifact: "web 1.2.0",
      server: "test",
    });
  });
  afterAll(async () => {
    await admin.close();
    await fleet.close();
  });

  const login = (body: string, headers: Record<string, string> = {}) =>
    fetch(`${base}/login`, {
      method: "POST",
      body,
      redirect: "manual",
      headers: { "Content-Type": "application/x-www-form-urlencoded", ...headers },
    });

  it("answers 401 without credentials: a login form for pages, text for the rest", async () => {
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(401);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    const html = await page.text();
    expect(html).toContain('<form method="post" action="/login">');
    expect(html).not.toContain("52:54:00:00:00:01");
    for (const p of ["/machines.json", "/reports.json", "/events", "/?fragment=1", "/machines/x"]) {
      const r = await fetch(`${base}${p}`);
      expect(r.status, p).toBe(401);
      expect(await r.text(), p).not.toContain("52:54:00");
    }
    // The static files carry no fleet data and style the login page.
    expect((await fetch(`${base}/dashboard.css`)).status).toBe(200);
    expect((await fetch(`${base}/dashboard.js`)).status).toBe(200);
  });

  it("logs in with the token and serves every route on the cookie", async () => {
    const wrong = await login("token=nope");
    expect(wrong.status).toBe(401);
    expect(await wrong.text()).toContain("That is not the admin token.");
    expect(wrong.headers.get("set-cookie")).toBeNull();
    const ok = await login(`token=${token}`);
    expect(ok.status).toBe(303);
    expect(ok.headers.get("location")).toBe("/");
    const set = ok.headers.get("set-cookie")!;
    expect(set).toMatch(new RegExp(`^${SESSION_COOKIE}=v1\\.\\d+\\.[A-Za-z0-9_-]{43};`));
    expect(set).toContain("HttpOnly");
    expect(set).toContain("SameSite=Strict");
    expect(set).toContain("Path=/");
    expect(set).not.toContain(token);
    const cookie = set.split(";")[0]!;
    const page = await fetch(`${base}/`, { headers: { Cookie: cookie } });
    expect(page.status).toBe(200);
    expect(page.headers.get("content-security-policy")).toContain("script-src 'self'");
    const html = await page.text();
    expect(html).toContain('data-machine="52:54:00:00:00:01"');
    const one = await fetch(`${base}/machines/52%3A54%3A00%3A00%3A00%3A01`, {
      headers: { Cookie: cookie },
    });
    expect(one.status).toBe(200);
    const detail = await one.text();
    expect(detail).toContain("&lt;script&gt;");
    expect(detail).toMatch(/<tr class="boot">/);
    expect((await fetch(`${base}/machines/nope`, { headers: { Cookie: cookie } })).status).toBe(
      404,
    );
    for (const p of ["/machines.json", "/reports.json", "/?fragment=1"])
      expect((await fetch(`${base}${p}`, { headers: { Cookie: cookie } })).status, p).toBe(200);
    // Bearer still works everywhere, the cookie is no Bearer token.
    const bearer = await fetch(`${base}/machines.json`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    expect(bearer.status).toBe(200);
    expect(
      (await fetch(`${base}/`, { headers: { Authorization: `Bearer ${token}` } })).status,
    ).toBe(200);
    expect(
      (
        await fetch(`${base}/machines.json`, {
          headers: { Authorization: `Bearer ${cookie.split("=")[1]}` },
        })
      ).status,
    ).toBe(401);
  });

  it("refuses forged, expired and other tokens' cookies, big and cross-origin forms", async () => {
    const now = Date.now();
    const good = sessionCookie(token, now);
    expect(sessionMatches(`a=b; ${SESSION_COOKIE}=${good}`, token, now)).toBe(true);
    expect(sessionMatches(`${SESSION_COOKIE}=${good}`, token, now + 13 * 3600_000)).toBe(false);
    expect(sessionMatches(`${SESSION_COOKIE}=${sessionCookie("u".repeat(43), now)}`, token)).toBe(
      false,
    );
    const [v, exp, mac] = good.split(".");
    expect(sessionMatches(`${SESSION_COOKIE}=${v}.${Number(exp) + 1}.${mac}`, token, now)).toBe(
      false,
    );
    expect(sessionMatches(`${SESSION_COOKIE}=${token}`, token)).toBe(false);
    expect(sessionMatches(undefined, token)).toBe(false);
    const big = await login(`token=${token}&pad=${"x".repeat(MAX_FORM_BYTES)}`);
    expect(big.status).toBe(413);
    const foreign: Record<string, string>[] = [
      { Origin: "http://evil.example" },
      { Origin: "null" },
      { "Sec-Fetch-Site": "cross-site" },
    ];
    for (const h of foreign)
      expect((await login(`token=${token}`, h)).status, JSON.stringify(h)).toBe(403);
    const out = await fetch(`${base}/logout`, { method: "POST", redirect: "manual" });
    expect(out.status).toBe(303);
    expect(out.headers.get("set-cookie")).toContain("Max-Age=0");
  });

  it("shows an install's progress and reinstalls from the machine page's button, same-origin only", async () => {
    const mac = "52:54:00:00:00:01";
    const auth = { Authorization: `Bearer ${token}` };
    await fleet.recordInstall({
      machine: mac,
      start: true,
      state: "installing",
      total: 4 << 20,
      image: "web 1.2.0",
      server: "t",
    });
    await fleet.recordInstall({
      machine: mac,
      state: "installing",
      bytes: 1 << 20,
      rate: 1 << 20,
      server: "t",
    });
    const table = await (await fetch(`${base}/?fragment=1`, { headers: auth })).text();
    expect(table).toContain("installing 25%");
    expect(table).toContain("1.0 of 4.0 MiB, 1.0 MiB/s");
    await fleet.recordInstall({ machine: mac, state: "installed", bytes: 4 << 20, server: "t" });
    const page = await (await fetch(`${base}/machines/${mac}`, { headers: auth })).text();
    expect(page).toContain(`action="/machines/${encodeURIComponent(mac)}/reinstall"`);
    const post = (headers: Record<string, string>) =>
      fetch(`${base}/machines/${encodeURIComponent(mac)}/reinstall`, {
        method: "POST",
        redirect: "manual",
        headers,
      });
    expect((await post({})).status).toBe(401);
    expect((await post({ ...auth, Origin: "http://evil.example" })).status).toBe(403);
    expect((await fleet.install(mac))?.state).toBe("installed");
    const ok = await post(auth);
    expect(ok.status).toBe(303);
    expect(ok.headers.get("location")).toBe(`/machines/${encodeURIComponent(mac)}`);
    expect(await fleet.install(mac)).toBeUndefined();
    expect((await post({ ...auth, Origin: base })).status).toBe(303);
  });

  it("streams the fleet's version to a bounded set of clients from one poller", async () => {
    const auth = { Authorization: `Bearer ${token}` };
    const open = async () => {
      const ac = new AbortController();
      const r = await fetch(`${base}/events`, { headers: auth, signal: ac.signal });
      const reader = r.body!.getReader();
      let text = "";
      const read = async (until: RegExp) => {
        while (!until.test(text)) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`stream ended: ${text}`);
          text += new TextDecoder().decode(value);
        }
        return text;
      };
      return { r, read, close: () => ac.abort() };
    };
    const a = await open();
    const b = await open();
    expect(a.r.status).toBe(200);
    expect(a.r.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect((await fetch(`${base}/events`, { headers: auth })).status).toBe(503);
    const v0 = await fleet.version();
    await a.read(new RegExp(`event: version\ndata: ${v0}\n`));
    await b.read(new RegExp(`data: ${v0}\n`));
    await fleet.recordBoot({
      machine: "52:54:00:00:00:02",
      facts: { mac: "52:54:00:00:00:02" },
      group: null,
      profile: null,
      artifact: null,
      server: "test",
    });
    const v1 = await fleet.version();
    expect(v1).not.toBe(v0);
    await a.read(new RegExp(`data: ${v1}\n`));
    await b.read(new RegExp(`data: ${v1}\n`));
    await a.read(/: heartbeat\n/);
    // One poller for both: polls ≈ time / pollMs, not twice that.
    const p0 = admin.events.polls;
    await new Promise((r) => setTimeout(r, 500));
    expect(admin.events.polls - p0).toBeLessThanOrEqual(12);
    a.close();
    b.close();
    await new Promise((r) => setTimeout(r, 200));
    expect(admin.events.size).toBe(0);
    expect(admin.events.running).toBe(false);
    const idle = admin.events.polls;
    await new Promise((r) => setTimeout(r, 200));
    expect(admin.events.polls).toBe(idle);
  });
});
