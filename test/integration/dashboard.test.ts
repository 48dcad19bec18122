import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KILN, ROOT, until } from "./helpers.js";

// The machines dashboard in a real browser: Debian's chromium (driven by
// puppeteer-core over a pipe, headless) and a real `kiln serve` (HTTP only:
// --interface lo --dhcp off), both inside a network namespace of this test's
// own, so the admin listener stays on its default 127.0.0.1:8079 (the
// namespace's loopback) and nothing collides with the host's ports. The
// test plays the machines with curl in the namespace, as iPXE and kiln-agent
// would ask. KILN_UPDATE_DOCS=1 also writes docs/dashboard.png.
const NS = `kt-dash-${process.pid}`;
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-dash-"));
/** Kept after the run: the screenshots. */
const SHOTS = join(tmpdir(), "kiln-it-dashboard");
const DB = join(OUT, "fleet.sqlite");
const BOOT = "http://127.0.0.1:8080";
const ADMIN = "http://127.0.0.1:8079";
const CHROMIUM = "/usr/bin/chromium";

const MACHINES = {
  web1: { mac: "52:54:00:d0:00:01", serial: "SER-1", agent: "1".repeat(32) },
  web2: { mac: "52:54:00:d0:00:02", serial: "SER-2", agent: "2".repeat(32) },
  stray: { mac: "52:54:00:d0:00:03", serial: "UNKNOWN-9", agent: "3".repeat(32) },
  late: { mac: "52:54:00:d0:00:04", serial: "SER-3", agent: "4".repeat(32) },
};

let serve: ChildProcess | undefined;
let serveLog = "";
let browser: Browser | undefined;
let nsMade = false;

function ip(...args: string[]): void {
  const r = spawnSync("ip", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr}`);
}

/** curl inside the namespace: status and body. */
function curl(url: string, o: { data?: string } = {}): { status: number; body: string } {
  const args = ["netns", "exec", NS, "curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-m", "10"];
  if (o.data !== undefined)
    args.push("-H", "Content-Type: text/plain", "--data-binary", "@-", "-X", "POST");
  const r = spawnSync("ip", [...args, url], { encoding: "utf8", input: o.data ?? "" });
  const i = r.stdout.lastIndexOf("\n");
  return { status: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i) };
}

/** What an iPXE client does: the chain script, then its own script with its identity. */
function boot(m: { mac: string; serial: string }): string {
  const chain = curl(`${BOOT}/boot.ipxe`);
  expect(chain.status).toBe(200);
  expect(chain.body).toContain("/ipxe?mac=${netX/mac}");
  const s = curl(`${BOOT}/ipxe?mac=${m.mac}&serial=${m.serial}&arch=x86_64&platform=pcbios`);
  expect(s.status).toBe(200);
  return s.body;
}

/** What kiln-agent does after a round: POST /report. */
function report(m: { mac: string; agent: string }, lines: string[]): void {
  const body = [`machine_id ${m.agent}`, `mac ${m.mac}`, ...lines, ""].join("\n");
  expect(curl(`${BOOT}/report?machine_id=${m.agent}`, { data: body }).status).toBe(204);
}

function isPng(file: string): number {
  const b = readFileSync(file);
  expect(
    b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
  ).toBe(true);
  expect(b.length).toBeGreaterThan(10_000);
  return b.length;
}

beforeAll(async () => {
  const bundle = join(OUT, "web.netboot");
  mkdirSync(bundle);
  writeFileSync(join(bundle, "cmdline"), "console=ttyS0,115200\n");
  writeFileSync(
    join(OUT, "manifest.json"),
    JSON.stringify({ name: "fleet-web", version: "1.4.0" }),
  );
  writeFileSync(join(OUT, "web_2.0.0.raw"), "not a real image\n");
  writeFileSync(
    join(OUT, "inventory.yaml"),
    `profiles:
  web:
    artifact: ./web.netboot
    metadata: { hostname: web, role: web }
    addons: [{ kind: portable, path: ./web_2.0.0.raw }]
groups:
  - { name: web-rack, profile: web, selector: { serial: [SER-1, SER-2, SER-3] } }
`,
  );
  ip("netns", "add", NS);
  nsMade = true;
  ip("-n", NS, "link", "set", "lo", "up");
  serve = spawn(
    "ip",
    [
      "netns",
      "exec",
      NS,
      process.execPath,
      KILN,
      "serve",
      "--inventory",
      join(OUT, "inventory.yaml"),
      "--interface",
      "lo",
      "--dhcp",
      "off",
      "--http-port",
      "8080",
      "--admin-listen",
      "127.0.0.1:8079",
      "--db",
      DB,
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  serve.stdout!.on("data", (b: Buffer) => {
    serveLog += b;
  });
  serve.stderr!.on("data", (b: Buffer) => {
    serveLog += b;
  });
  await until(
    `kiln serve (log so far:\n${serveLog})`,
    () => {
      if (serve?.exitCode !== null) throw new Error(`kiln serve exited:\n${serveLog}`);
      return serveLog.includes("dnsmasq: DHCP off");
    },
    30_000,
  );
  // Chromium in the namespace too (puppeteer talks to it over a pipe, which the wrapper keeps).
  const wrapper = join(OUT, "chromium-in-ns");
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${NS} ${CHROMIUM} "$@"\n`);
  chmodSync(wrapper, 0o755);
  browser = await puppeteer.launch({
    executablePath: wrapper,
    pipe: true,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"],
    defaultViewport: { width: 1280, height: 720 },
    userDataDir: join(OUT, "chromium-profile"),
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  mkdirSync(SHOTS, { recursive: true });
}, 120_000);

afterAll(async () => {
  await browser?.close().catch(() => {});
  if (serve && serve.exitCode === null) {
    const gone = new Promise((r) => serve!.once("close", r));
    serve.kill("SIGTERM");
    await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
    if (serve.exitCode === null) serve.kill("SIGKILL");
  }
  if (nsMade) {
    // Whatever is still running in the namespace was started by this test.
    const pids = spawnSync("ip", ["netns", "pids", NS], { encoding: "utf8" }).stdout.split(/\s+/);
    for (const pid of pids.filter(Boolean)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {}
    }
    spawnSync("ip", ["netns", "del", NS]);
  }
  rmSync(OUT, { recursive: true, force: true });
}, 60_000);

describe("machines dashboard in chromium", () => {
  let page: Page;

  it("answers a browser without the token with 401 and a login form", async () => {
    boot(MACHINES.web1);
    boot(MACHINES.web1);
    boot(MACHINES.web2);
    expect(boot(MACHINES.stray)).toContain("no profile for this machine");
    report(MACHINES.web1, ["portable web 1.0.0", "status ok"]);
    report(MACHINES.web2, ["failed attach web_2.0.0.raw: sha256 mismatch", "status failed"]);
    page = await browser!.newPage();
    const r = await page.goto(`${ADMIN}/`);
    expect(r?.status()).toBe(401);
    expect(await page.$("form[action='/login'] input[name=token]")).not.toBeNull();
    expect(await page.content()).not.toContain(MACHINES.web1.mac);
    // The JSON stays Bearer-or-cookie too.
    expect(curl(`${ADMIN}/machines.json`).status).toBe(401);
  });

  it("logs in through the form and lists the machines", async () => {
    await page.type("input[name=token]", "not-the-token");
    const [wrong] = await Promise.all([
      page.waitForNavigation(),
      page.click("button[type=submit]"),
    ]);
    expect(wrong?.status()).toBe(401);
    expect(await page.content()).toContain("That is not the admin token.");
    const token = readFileSync(`${DB}.admin-token`, "utf8").trim();
    await page.type("input[name=token]", token);
    const [ok] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    expect(ok?.status()).toBe(200);
    expect(page.url()).toBe(`${ADMIN}/`);
    const cookies = await browser!.cookies();
    const session = cookies.find((c) => c.name === "kiln_admin");
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe("Strict");
    expect(session?.value).not.toContain(token);
    const rows = await page.$$eval("tr.machine", (trs) =>
      trs.map((tr) => [(tr as HTMLElement).dataset.machine, (tr as HTMLElement).dataset.state]),
    );
    expect(rows).toEqual([
      [MACHINES.stray.mac, "unmatched"],
      [MACHINES.web2.mac, "failing"],
      [MACHINES.web1.mac, "reporting"],
    ]);
    const web1 = await page.$eval(
      `tr[data-machine="${MACHINES.web1.mac}"]`,
      (tr) => tr.textContent ?? "",
    );
    expect(web1).toContain("web 1.0.0 → 2.0.0 assigned");
    expect(web1).toContain("fleet-web 1.4.0");
    expect(web1).toContain("via 127.0.0.1:8080");
    const web2 = await page.$eval(
      `tr[data-machine="${MACHINES.web2.mac}"]`,
      (tr) => tr.textContent ?? "",
    );
    expect(web2).toContain("attach web_2.0.0.raw: sha256 mismatch");
    expect(web2).toContain("web not attached → 2.0.0 assigned");
  });

  it("shows a newly booted machine without a reload", async () => {
    await page.waitForFunction(() => document.getElementById("live")?.textContent === "live", {
      timeout: 10_000,
    });
    await page.evaluate(() => {
      (window as unknown as { kilnMark: number }).kilnMark = 42;
    });
    const t0 = Date.now();
    boot(MACHINES.late);
    await page.waitForSelector(`tr[data-machine="${MACHINES.late.mac}"]`, { timeout: 15_000 });
    const ms = Date.now() - t0;
    console.log(`dashboard: new machine on the open page after ${ms} ms`);
    // The same document: the mark set before is still there.
    expect(await page.evaluate(() => (window as unknown as { kilnMark?: number }).kilnMark)).toBe(
      42,
    );
    expect(
      await page.$eval(
        `tr[data-machine="${MACHINES.late.mac}"]`,
        (tr) => (tr as HTMLElement).dataset.state,
      ),
    ).toBe("booted");
    expect(await page.$eval("main", (m) => m.textContent ?? "")).toContain("4 machines");
    const shot = join(SHOTS, "fleet.png");
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`dashboard: ${shot}, ${isPng(shot)} bytes`);
    if (process.env.KILN_UPDATE_DOCS === "1") copyFileSync(shot, join(ROOT, "docs/dashboard.png"));
  });

  it("shows one machine's facts, boots and reports", async () => {
    await Promise.all([
      page.waitForNavigation(),
      page.click(`tr[data-machine="${MACHINES.web1.mac}"] a`),
    ]);
    expect(page.url()).toBe(`${ADMIN}/machines/${encodeURIComponent(MACHINES.web1.mac)}`);
    expect(await page.$$("table.boots tr.boot")).toHaveLength(2);
    expect(await page.$$("table.reports tr.report")).toHaveLength(1);
    const text = await page.$eval("main", (m) => m.textContent ?? "");
    expect(text).toContain("SER-1");
    expect(text).toContain(MACHINES.web1.agent);
    // Live here too: another boot of this machine shows up in its history.
    boot(MACHINES.web1);
    await page.waitForFunction(
      () => document.querySelectorAll("table.boots tr.boot").length === 3,
      {
        timeout: 15_000,
      },
    );
    const shot = join(SHOTS, "machine.png");
    await page.screenshot({ path: shot, fullPage: true });
    isPng(shot);
  });
});
