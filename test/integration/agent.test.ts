import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

// Per-host composition for real: a base image with kiln-agent booted in QEMU
// (TCG), kiln serve handing out a portable web service and a jq sysext from
// an inventory the test edits, the service probed from the host through a
// forwarded port, and the guest inspected over kiln ssh.
const ROOT = resolve(import.meta.dirname, "../..");
const KILN = join(ROOT, "bin/kiln.js");
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-agent-"));
const PORT = 21000 + Math.floor(Math.random() * 9000);
const WEB = PORT + 1;
const SPECS = join(OUT, "fleet");
const INVENTORY = join(SPECS, "inventory.yaml");

function kiln(args: string[]) {
  const r = spawnSync(process.execPath, [KILN, ...args], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 1_200_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const ssh = (cmd: string) => kiln(["ssh", "fleet-base", "--", cmd]);

async function until<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  ms = 240_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

async function page(): Promise<string | undefined> {
  try {
    const r = await fetch(`http://127.0.0.1:${WEB}/`, { signal: AbortSignal.timeout(3000) });
    return r.ok ? await r.text() : undefined;
  } catch {
    return undefined;
  }
}

const raw = (dir: string, name: string) => join(OUT, "build", dir, name);

function inventory(addons: string[]): void {
  writeFileSync(
    INVENTORY,
    `profiles:\n  fleet:\n    addons:\n${addons.map((a) => `      - ${a}\n`).join("")}    kernel_args: ""\ngroups:\n  - { name: everyone, profile: fleet }\n`,
  );
}

const agentLog = () => ssh("journalctl -u kiln-agent -o cat --no-pager").stdout;
const count = (text: string, what: string) =>
  text.split("\n").filter((l) => l.includes(what)).length;

let serve: ChildProcess | undefined;
let vm: ChildProcess | undefined;

function startServe(): ChildProcess {
  return spawn(
    process.execPath,
    [
      KILN,
      "serve",
      "--inventory",
      INVENTORY,
      "--interface",
      "lo",
      "--dhcp",
      "off",
      "--http-port",
      String(PORT),
      "--address",
      "10.0.2.2",
      "--db",
      join(OUT, "machines.sqlite"),
      "--admin-listen",
      `127.0.0.1:${PORT + 2}`,
    ],
    { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] },
  );
}

async function stop(p: ChildProcess | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.on("close", r));
  p.kill("SIGTERM");
  await gone;
}

afterAll(async () => {
  await stop(vm);
  await stop(serve);
  rmSync(OUT, { recursive: true, force: true });
});

describe.sequential("kiln-agent with portable services and system extensions", () => {
  it("builds the base, two portable versions and a sysext holding only what it adds", () => {
    mkdirSync(SPECS, { recursive: true });
    for (const f of ["base.yaml", "web.yaml", "web-2.yaml", "tools.yaml"]) {
      const text = readFileSync(join(ROOT, "examples/fleet", f), "utf8")
        .replace(":8080", `:${PORT}`)
        .replace("-p 8081", `-p ${WEB}`);
      writeFileSync(join(SPECS, f), text);
    }
    for (const [spec, dir] of [
      ["base", "base"],
      ["web", "web"],
      ["web-2", "web-2"],
      ["tools", "tools"],
    ] as const) {
      const r = kiln(["build", join(SPECS, `${spec}.yaml`), "-o", join(OUT, "build", dir)]);
      expect(r.code, `${spec}: ${r.stderr}`).toBe(0);
    }
    const list = (f: string) =>
      spawnSync("unsquashfs", ["-l", "-d", "", f], { encoding: "utf8" }).stdout;
    const web = list(raw("web", "web_1.0.0.raw"));
    expect(web).toContain("/usr/lib/systemd/system/web.service");
    expect(web).toContain("/usr/lib/os-release");
    const tools = list(raw("tools", "tools_1.0.0.raw"));
    expect(tools).toContain("/usr/bin/jq");
    expect(tools).toContain("/usr/lib/extension-release.d/extension-release.tools");
    // Only what jq adds: no bash, no systemd, nothing outside /usr and /opt.
    expect(tools).not.toContain("/usr/bin/bash");
    expect(tools).not.toContain("/usr/lib/systemd/systemd\n");
    expect(
      tools.split("\n").filter((l) => l && !l.startsWith("/usr") && !l.startsWith("/opt")),
    ).toEqual([]);
    const rel = spawnSync(
      "unsquashfs",
      [
        "-cat",
        raw("tools", "tools_1.0.0.raw"),
        "usr/lib/extension-release.d/extension-release.tools",
      ],
      { encoding: "utf8" },
    ).stdout;
    expect(rel).toContain("ID=debian\nVERSION_ID=12\n");
    const inspect = JSON.parse(
      kiln(["inspect", raw("tools", "tools_1.0.0.raw"), "--json"]).stdout,
    ) as Record<string, unknown>;
    expect(inspect).toMatchObject({ kind: "sysext", name: "tools", version: "1.0.0" });
    expect(inspect.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it("a booted base attaches the assigned portable (it answers) and sysext (jq runs)", async () => {
    inventory([
      `{ kind: portable, path: ${raw("web", "web_1.0.0.raw")} }`,
      `{ kind: sysext, path: ${raw("tools", "tools_1.0.0.raw")} }`,
    ]);
    serve = startServe();
    await until(
      "kiln serve",
      async () => (await fetch(`http://127.0.0.1:${PORT}/assignment`).catch(() => undefined))?.ok,
    );
    vm = spawn(
      process.execPath,
      [
        KILN,
        "vm",
        raw("base", "fleet-base.qcow2"),
        "--direct-kernel",
        "--accel",
        "tcg",
        "--ssh",
        "--forward",
        `${WEB}:${WEB}`,
        "--console-log",
        join(OUT, "console.log"),
      ],
      { cwd: ROOT, stdio: ["pipe", "ignore", "pipe"] },
    );
    expect(
      await until("web 1.0.0 answers", async () =>
        (await page()) === "web 1.0.0\n" ? true : undefined,
      ),
    ).toBe(true);
    expect(
      await until("jq runs", () =>
        ssh("jq --version").code === 0 ? ssh("jq --version").stdout : undefined,
      ),
    ).toMatch(/^jq-1\.6/);
    // Reports are on the admin listener, for the token kiln serve made beside its database.
    const token = readFileSync(join(OUT, "machines.sqlite.admin-token"), "utf8").trim();
    const reports = (await (
      await fetch(`http://127.0.0.1:${PORT + 2}/reports.json`, {
        headers: { Authorization: `Bearer ${token}` },
      })
    ).json()) as Record<string, { state: string }>;
    expect(Object.values(reports)[0]?.state).toMatch(/portable web 1\.0\.0/);
  });

  it("a new portable version is attached once; an unchanged assignment attaches nothing", async () => {
    inventory([
      `{ kind: portable, path: ${raw("web-2", "web_2.0.0.raw")} }`,
      `{ kind: sysext, path: ${raw("tools", "tools_1.0.0.raw")} }`,
    ]);
    await until("web 2.0.0 answers", async () =>
      (await page()) === "web 2.0.0\n" ? true : undefined,
    );
    // Three more rounds of the agent (every 10 s) with the same assignment.
    await new Promise((r) => setTimeout(r, 35_000));
    const log = agentLog();
    expect(count(log, "attached portable web 1.0.0")).toBe(1);
    expect(count(log, "attached portable web 2.0.0")).toBe(1);
    expect(count(log, "detached portable web 1.0.0")).toBe(1);
    expect(count(log, "merged sysext tools 1.0.0")).toBe(1);
  });

  it("a download that does not match its pinned sha256 is refused; the running version keeps answering", async () => {
    // web 3 is pinned to web 2's hash in the inventory, but the file served
    // has one byte changed: damaged on the server or on the way.
    const good = raw("web-2", "web_2.0.0.raw");
    const sha = createHash("sha256").update(readFileSync(good)).digest("hex");
    const bad = raw("web-2", "web_3.0.0.raw");
    const bytes = readFileSync(good);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0xff;
    writeFileSync(bad, bytes);
    inventory([
      `{ kind: portable, path: ${bad}, sha256: ${sha} }`,
      `{ kind: sysext, path: ${raw("tools", "tools_1.0.0.raw")} }`,
    ]);
    await until("the refusal", () =>
      agentLog().includes("refused portable web 3.0.0") ? true : undefined,
    );
    expect(await page()).toBe("web 2.0.0\n");
    expect(ssh("ls /var/lib/kiln-agent/images/portable/web").stdout.trim()).toBe("2.0.0");
  });

  it("with the server stopped the add-ons keep running; a removed portable is detached", async () => {
    inventory([
      `{ kind: portable, path: ${raw("web-2", "web_2.0.0.raw")} }`,
      `{ kind: sysext, path: ${raw("tools", "tools_1.0.0.raw")} }`,
    ]);
    await new Promise((r) => setTimeout(r, 12_000));
    await stop(serve);
    await until(
      "the agent noticing",
      () => (agentLog().includes("keeping what is attached") ? true : undefined),
      60_000,
    );
    await new Promise((r) => setTimeout(r, 20_000));
    expect(await page()).toBe("web 2.0.0\n");
    expect(ssh("jq --version").code).toBe(0);

    inventory([`{ kind: sysext, path: ${raw("tools", "tools_1.0.0.raw")} }`]);
    serve = startServe();
    await until(
      "web detached",
      async () => (agentLog().includes("removed portable web 2.0.0") ? true : undefined),
      120_000,
    );
    expect(await page()).toBeUndefined();
    expect(ssh("portablectl list --no-legend").stdout).not.toContain("web");
    expect(ssh("jq --version").code).toBe(0);
  });

  it("scripts/dev-agent runs a changed agent in the running VM without a rebuild", async () => {
    const variant = join(OUT, "kiln-agent.dev");
    writeFileSync(
      variant,
      readFileSync(join(ROOT, "assets/kiln-agent/kiln-agent"), "utf8").replace(
        "log() { printf 'kiln-agent: %s\\n'",
        "log() { printf 'kiln-agent (dev): %s\\n'",
      ),
    );
    const dev = spawnSync(join(ROOT, "scripts/dev-agent"), ["fleet-base"], {
      encoding: "utf8",
      env: { ...process.env, KILN_AGENT_SRC: variant },
    });
    expect(dev.status, dev.stderr).toBe(0);
    await until(
      "the changed agent's words",
      () => (agentLog().includes("kiln-agent (dev): ") ? true : undefined),
      60_000,
    );
    expect(ssh("systemctl is-active kiln-agent").stdout.trim()).toBe("active");
  });
});
