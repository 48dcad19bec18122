import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { hostileCases, startHostile } from "./fixtures/hostile-addons.js";
import { KILN, kiln, ROOT } from "./helpers.js";

// Per-host composition for real: a base image with kiln-agent booted in QEMU
// (TCG), kiln serve handing out a portable web service and a jq sysext from
// an inventory the test edits and signs (kiln addons sign, a key from kiln
// keys addons whose public half is baked into the base), the service probed
// from the host through a forwarded port, and the guest inspected over kiln
// ssh. A hostile add-on server (fixtures/hostile-addons.ts) is thrown at the
// same running agent.
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-agent-"));
const PORT = 21000 + Math.floor(Math.random() * 9000);
const WEB = PORT + 1;
const SPECS = join(OUT, "fleet");
const INVENTORY = join(SPECS, "inventory.yaml");
const KEYS = join(OUT, "keys");
const FOREIGN = join(OUT, "foreign");
const HOSTILE = PORT + 2;
// kiln serve's admin listener (reports).
const ADMIN = PORT + 3;
const OLDER = join(OUT, "older");

const ssh = (cmd: string) => kiln(["ssh", "fleet-base", "--", cmd]);

/** kiln ssh without blocking the event loop (the hostile server lives in this process). */
function sshAsync(cmd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [KILN, "ssh", "fleet-base", "--", cmd], { cwd: ROOT });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d));
    p.stderr.on("data", (d: Buffer) => (stderr += d));
    p.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

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

/** Write the inventory and sign what it hands out (into `outDir`, default beside it). */
function inventory(addons: string[], outDir?: string): void {
  writeFileSync(
    INVENTORY,
    `profiles:\n  fleet:\n    addons:\n${addons.map((a) => `      - ${a}\n`).join("")}    kernel_args: ""\n  lab: {}\ngroups:\n  - { name: everyone, profile: fleet }\n`,
  );
  const r = kiln([
    "addons",
    "sign",
    INVENTORY,
    "--key",
    join(KEYS, "addons.key.pem"),
    ...(outDir ? ["-o", outDir] : []),
  ]);
  expect(r.code, r.stderr).toBe(0);
}

const agentLog = () => ssh("journalctl -u kiln-agent -o cat --no-pager").stdout;
const count = (text: string, what: string) =>
  text.split("\n").filter((l) => l.includes(what)).length;

let serve: ChildProcess | undefined;
let vm: ChildProcess | undefined;
let hostile: Server | undefined;

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
      `127.0.0.1:${ADMIN}`,
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
  hostile?.closeAllConnections();
  hostile?.close();
  rmSync(OUT, { recursive: true, force: true });
});

describe.sequential("kiln-agent with portable services and system extensions", () => {
  it("builds the base, two portable versions and a sysext holding only what it adds", () => {
    mkdirSync(SPECS, { recursive: true });
    for (const dir of [KEYS, FOREIGN]) expect(kiln(["keys", "addons", dir]).code).toBe(0);
    expect(statSync(join(KEYS, "addons.key.pem")).mode & 0o777).toBe(0o600);
    for (const f of ["base.yaml", "web.yaml", "web-2.yaml", "tools.yaml"]) {
      const text = readFileSync(join(ROOT, "examples/fleet", f), "utf8")
        .replace(":8080", `:${PORT}`)
        .replace("-p 8081", `-p ${WEB}`)
        .replace("../../keys/addons.pub.pem", join(KEYS, "addons.pub.pem"));
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
    const manifest = JSON.parse(readFileSync(raw("base", "manifest.json"), "utf8")) as {
      packages: { name: string; version: string }[];
      sizes: { installed: number };
    };
    // The verifier comes with the agent (openssl); the figure goes into the report.
    const openssl = manifest.packages.find((p) => p.name === "openssl");
    expect(openssl).toBeDefined();
    console.log(
      `fleet-base installed ${manifest.sizes.installed} bytes, openssl ${openssl?.version}`,
    );
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
    // A build with nothing kiln test can boot (a portable image) fails it, never passes it.
    const t = kiln(["test", join(OUT, "build", "web")]);
    expect(t.code).toBe(2);
    expect(t.stderr).toMatch(/nothing in .*web can be booted: its outputs are portable/);
    expect(inspect.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it("a booted base attaches the assigned portable (it answers) and sysext (jq runs)", async () => {
    inventory([
      `{ kind: portable, path: ${raw("web", "web_1.0.0.raw")} }`,
      `{ kind: sysext, path: ${raw("tools", "tools_1.0.0.raw")} }`,
    ]);
    // Kept for the hostile server: a valid list, older than the next.
    mkdirSync(OLDER);
    for (const f of ["addons.list", "addons.list.sig"])
      copyFileSync(join(SPECS, f), join(OLDER, f));
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
    expect(ssh("cat /etc/kiln/agent.pub.pem").stdout).toBe(
      readFileSync(join(KEYS, "addons.pub.pem"), "utf8"),
    );
    // Reports are on the admin listener, for the token kiln serve made beside its database.
    const token = readFileSync(join(OUT, "machines.sqlite.admin-token"), "utf8").trim();
    const reports = (await (
      await fetch(`http://127.0.0.1:${ADMIN}/reports.json`, {
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

  it("a hostile add-on server gets nothing written, attached or removed, and every refusal says why", async () => {
    const web2 = readFileSync(raw("web-2", "web_2.0.0.raw"));
    const sha = createHash("sha256").update(web2).digest("hex");
    const signed = (dir: string) => ({
      text: readFileSync(join(dir, "addons.list"), "utf8"),
      sig: readFileSync(join(dir, "addons.list.sig")),
    });
    const assignment = await (await fetch(`http://127.0.0.1:${PORT}/assignment`)).text();
    const line = assignment.split("\n").find((l) => l.startsWith("portable web 2.0.0 "))!;
    expect(line).toContain(sha);
    const cases = hostileCases({
      current: signed(SPECS),
      older: signed(OLDER),
      foreignKey: readFileSync(join(FOREIGN, "addons.key.pem"), "utf8"),
      key: readFileSync(join(KEYS, "addons.key.pem"), "utf8"),
      profile: "fleet",
      other: "lab",
      line,
      sha,
      evil: `http://10.0.2.2:${HOSTILE}/inject-K/evil`,
    });
    hostile = await startHostile(cases, HOSTILE);
    const before = ssh(
      "cat /var/lib/kiln-agent/serial; ls /var/lib/kiln-agent/current; portablectl list --no-legend; ls /var/lib/extensions",
    ).stdout;
    // One agent run per case, each pointed at its own prefix of the hostile
    // server by a conf in /run (the image's conf, then another URL), all in
    // one transient unit so that their words reach the journal.
    const names = cases.map((c) => c.name).join(" ");
    const batch = await sshAsync(`set -u
systemctl stop kiln-agent
touch /run/kiln-hostile.mark; sleep 1
cat >/run/kiln-hostile.sh <<'EOS'
for c in ${names}; do
  echo "== $c"
  printf '. /etc/kiln/agent.conf\\nURL=http://10.0.2.2:${HOSTILE}/%s\\n' "$c" >/run/kiln-hostile-$c.conf
  KILN_AGENT_CONF=/run/kiln-hostile-$c.conf /usr/lib/kiln-agent/kiln-agent once
done
EOS
systemd-run --wait --quiet -u kiln-hostile sh /run/kiln-hostile.sh || true
journalctl --sync
journalctl -u kiln-hostile -o cat --no-pager
echo "== written"
find / -xdev -newer /run/kiln-hostile.mark -not -type d -not -path '/var/lib/kiln-agent/*' -not -path '/var/log/*' -not -path '/var/lib/systemd/timesync/*' -not -path '/var/lib/systemd/timers/*' -not -path '/var/lib/logrotate/*'
ls -d /kiln-pwned /etc/kiln-evil /etc/systemd/system/evil.service /run/systemd/system/evil.service /var/lib/kiln-agent/images/portable/web/2.0.0/evil 2>/dev/null
echo "== end"
systemctl start kiln-agent`);
    expect(batch.code, batch.stderr).toBe(0);
    const section = (name: string) =>
      (`\n${batch.stdout}`.split(`\n== ${name}\n`)[1] ?? "").split(/^== /m)[0]!;
    for (const c of cases) {
      expect(section(c.name), c.name).toContain(c.expect);
      expect(section(c.name), c.name).toContain("keeping what is attached");
      expect(section(c.name), c.name).not.toMatch(/attached portable|detached|merged|removed/);
    }
    // Only the agent's own state, logs and timers' stamps may have changed on the root filesystem.
    expect(section("written").trim()).toBe("");
    expect(
      ssh(
        "cat /var/lib/kiln-agent/serial; ls /var/lib/kiln-agent/current; portablectl list --no-legend; ls /var/lib/extensions",
      ).stdout,
    ).toBe(before);
    expect(await page()).toBe("web 2.0.0\n");
  });

  it("a signed list whose file does not match is refused; the running version keeps answering", async () => {
    // web 3 is signed as the operator built it, then the file served has one
    // byte changed: damaged or replaced on the server after signing.
    const good = raw("web-2", "web_2.0.0.raw");
    const bad = raw("web-2", "web_3.0.0.raw");
    copyFileSync(good, bad);
    const staging = join(OUT, "staging");
    inventory(
      [
        `{ kind: portable, path: ${bad} }`,
        `{ kind: sysext, path: ${raw("tools", "tools_1.0.0.raw")} }`,
      ],
      staging,
    );
    const bytes = readFileSync(good);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0xff;
    writeFileSync(bad, bytes);
    for (const f of ["addons.list.sig", "addons.list"])
      copyFileSync(join(staging, f), join(SPECS, f));
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
