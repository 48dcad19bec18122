import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConsoleWatcher } from "../../src/runtime/console.js";
import { sharedBuild } from "./helpers.js";

// Network boot end to end, inside network namespaces this test creates:
//   lan:  a bridge with one tap per QEMU client
//   site: the site's own DHCP server (plain dnsmasq, no boot options), 10.77.0.1
//   kiln: `kiln serve` in proxy-DHCP mode, 10.77.0.2
const ROOT = resolve(import.meta.dirname, "../..");
const KILN = join(ROOT, "bin/kiln.js");
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-netboot-"));
const tag = `kt${process.pid % 10000}`;
const NS = { lan: `${tag}-lan`, site: `${tag}-site`, kiln: `${tag}-kiln` };
const DB = join(OUT, "machines.sqlite");
const INV = join(OUT, "inventory.yaml");
// The netboot example, built once for the run (netboot-integrity.test.ts uses it too).
let NB = "";
const procs: ChildProcess[] = [];
let serveLog = "";

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}
const ip = (...a: string[]) => sh("ip", a);
const inNs = (ns: string, cmd: string, ...a: string[]) =>
  sh("ip", ["netns", "exec", ns, cmd, ...a]);

function inventory(extra = ""): string {
  const bundle = join(NB, "netboot.netboot");
  return `profiles:
  alpha: { artifact: ${bundle}, metadata: { hostname: alpha } }
  beta: { artifact: ${bundle}, metadata: { hostname: beta } }
  gamma: { artifact: ${bundle}, metadata: { hostname: gamma } }
groups:
  - { name: by-mac, profile: alpha, selector: { mac: "52:54:00:77:00:01" } }
  - { name: by-serial, profile: beta, selector: { serial: [SER-B, SER-X] } }
${extra}`;
}

function setupNetwork(): void {
  for (const ns of Object.values(NS)) ip("netns", "add", ns);
  ip("-n", NS.lan, "link", "add", "br0", "type", "bridge");
  ip("-n", NS.lan, "link", "set", "br0", "up");
  for (const [ns, addr] of [
    [NS.site, "10.77.0.1/24"],
    [NS.kiln, "10.77.0.2/24"],
  ] as const) {
    const short = ns.endsWith("site") ? "site" : "kiln";
    ip(
      "-n",
      NS.lan,
      "link",
      "add",
      `v${short}`,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      ns,
    );
    ip("-n", NS.lan, "link", "set", `v${short}`, "master", "br0", "up");
    ip("-n", ns, "addr", "add", addr, "dev", "eth0");
    ip("-n", ns, "link", "set", "eth0", "up");
    ip("-n", ns, "link", "set", "lo", "up");
  }
  for (const t of ["tap1", "tap2", "tap3"]) {
    ip("-n", NS.lan, "tuntap", "add", t, "mode", "tap");
    ip("-n", NS.lan, "link", "set", t, "master", "br0", "up");
  }
}

function background(
  ns: string,
  cmd: string,
  args: string[],
  onData?: (s: string) => void,
): ChildProcess {
  const p = spawn("ip", ["netns", "exec", ns, cmd, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  p.stdout?.on("data", (b: Buffer) => onData?.(b.toString()));
  p.stderr?.on("data", (b: Buffer) => onData?.(b.toString()));
  procs.push(p);
  return p;
}

async function until(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A network-booting QEMU client on a tap of the bridge; resolves with its console once it is ready. */
async function client(o: {
  tap: string;
  mac: string;
  serial: string;
  firmware: "bios" | "uefi";
  until?: RegExp;
  timeoutMs?: number;
}): Promise<string> {
  const args = [
    "-machine",
    "q35",
    // Single-threaded TCG: QEMU 7.2's multi-threaded TCG loses timer interrupts now and then.
    "-accel",
    "tcg,thread=single",
    "-smp",
    "2",
    "-m",
    "1024",
    "-nodefaults",
    "-nographic",
    "-serial",
    "stdio",
    "-boot",
    "n",
  ];
  args.push(
    "-netdev",
    `tap,id=n0,ifname=${o.tap},script=no,downscript=no`,
    "-device",
    `virtio-net-pci,netdev=n0,mac=${o.mac}`,
  );
  args.push("-smbios", `type=1,serial=${o.serial}`, "-device", "virtio-rng-pci");
  if (o.firmware === "uefi") {
    const vars = join(OUT, `vars-${o.tap}.fd`);
    copyFileSync("/usr/share/OVMF/OVMF_VARS_4M.fd", vars);
    args.push(
      "-drive",
      "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
      "-drive",
      `if=pflash,format=raw,unit=1,file=${vars}`,
    );
  }
  const w = new ConsoleWatcher();
  const q = background(NS.lan, "qemu-system-x86_64", args, (t) => w.feed(t));
  try {
    if (o.until) {
      await until(
        `${o.until} on ${o.tap}`,
        () => o.until!.test(w.output) || /ipxe\?mac=52:54:00:77:00:03/.test(serveLog),
        o.timeoutMs ?? 240_000,
      );
      return w.output;
    }
    const s = await w.wait(o.timeoutMs ?? 300_000);
    if (s.state !== "ready")
      throw new Error(
        `${o.tap} did not boot: ${s.state === "failed" ? s.reason : ""}\n${w.tail(40)}`,
      );
    // The login prompt follows the multi-user target by a moment.
    await until("login prompt", () => /login: ?$/m.test(w.output), 60_000);
    return w.output;
  } finally {
    q.kill("SIGKILL");
  }
}

function machines(): { id: string; group: string | null; facts: Record<string, string> }[] {
  return JSON.parse(sh(process.execPath, [KILN, "machines", "--db", DB, "--json"]));
}

beforeAll(async () => {
  NB = sharedBuild("examples/netboot.yaml");
  setupNetwork();
  const leases = join(OUT, "site.leases");
  background(NS.site, "dnsmasq", [
    "--keep-in-foreground",
    "--port=0",
    "--interface=eth0",
    "--bind-interfaces",
    "--dhcp-range=10.77.0.100,10.77.0.200,1h",
    `--dhcp-leasefile=${leases}`,
    "--log-facility=-",
    "--user=root",
  ]);
  writeFileSync(INV, inventory());
  background(
    NS.kiln,
    process.execPath,
    [KILN, "serve", "--inventory", INV, "--interface", "eth0", "--db", DB],
    (t) => {
      serveLog += t;
    },
  );
  await until("kiln serve to start", () => serveLog.includes("dnsmasq: DHCP proxy"), 20_000);
}, 600_000);

afterAll(() => {
  for (const p of procs) p.kill("SIGTERM");
  spawnSync("sleep", ["1"]);
  for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
  for (const ns of Object.values(NS)) spawnSync("ip", ["netns", "del", ns]);
  rmSync(OUT, { recursive: true, force: true });
});

describe("kiln serve: proxy-DHCP network boot", () => {
  it("a BIOS client chosen by MAC boots its own profile", async () => {
    const con = await client({
      tap: "tap1",
      mac: "52:54:00:77:00:01",
      serial: "SER-A",
      firmware: "bios",
    });
    expect(con).toContain(
      "kiln-netboot: fetching http://10.77.0.2:8080/artifacts/alpha/root.squashfs",
    );
    expect(con).toMatch(/^alpha login: ?$/m);
  });

  it("a UEFI client chosen by SMBIOS serial boots another", async () => {
    const con = await client({
      tap: "tap2",
      mac: "52:54:00:77:00:02",
      serial: "SER-B",
      firmware: "uefi",
    });
    expect(con).toContain("/artifacts/beta/root.squashfs");
    expect(con).toMatch(/^beta login: ?$/m);
  });

  it("a client that matches no group is recorded as unmatched", async () => {
    await client({
      tap: "tap3",
      mac: "52:54:00:77:00:03",
      serial: "SER-C",
      firmware: "bios",
      until: /no profile for this machine/,
    });
    // kiln serve writes its database at most every half second.
    await until(
      "the unmatched machine in the database",
      () => machines().some((x) => x.id === "52:54:00:77:00:03"),
      5000,
    );
    const m = machines();
    expect(m.find((x) => x.id === "52:54:00:77:00:03")).toMatchObject({
      group: null,
      facts: { serial: "SER-C" },
    });
    expect(m.find((x) => x.id === "52:54:00:77:00:01")).toMatchObject({ group: "by-mac" });
    expect(m.find((x) => x.id === "52:54:00:77:00:02")).toMatchObject({
      group: "by-serial",
      facts: { serial: "SER-B" },
    });
  });

  it("an inventory edit changes what the next client gets; a broken edit changes nothing", async () => {
    writeFileSync(
      INV,
      inventory('  - { name: new, profile: gamma, selector: { mac: "52:54:00:77:00:03" } }\n'),
    );
    await until("reload", () => serveLog.includes("inventory reloaded"), 10_000);
    // Asked from inside the kiln namespace, as a client on that network would.
    const fetchJs =
      'fetch("http://10.77.0.2:8080/ipxe?mac=52:54:00:77:00:03").then(async (r) => process.stdout.write(await r.text()))';
    const script = () => inNs(NS.kiln, process.execPath, "-e", fetchJs);
    expect(script()).toContain("systemd.hostname=gamma");
    writeFileSync(
      INV,
      `${inventory('  - { name: new, profile: gamma, selector: { mac: "52:54:00:77:00:03" } }\n')}  - { name: broken, profle: x }\n`,
    );
    await until("refusal", () => serveLog.includes("inventory edit refused"), 10_000);
    expect(serveLog).toMatch(/inventory\.yaml:\d+:\d+: unknown key `profle`/);
    expect(script()).toContain("systemd.hostname=gamma");
    const con = await client({
      tap: "tap3",
      mac: "52:54:00:77:00:03",
      serial: "SER-C",
      firmware: "bios",
    });
    expect(con).toMatch(/^gamma login: ?$/m);
  });

  it("TFTP serves the iPXE loaders and nothing outside its root", () => {
    const get = (name: string) =>
      spawnSync(
        "ip",
        [
          "netns",
          "exec",
          NS.site,
          "busybox",
          "tftp",
          "-g",
          "-r",
          name,
          "-l",
          join(OUT, "tftp-got"),
          "10.77.0.2",
        ],
        { encoding: "utf8" },
      );
    expect(get("undionly.kpxe").status).toBe(0);
    for (const bad of ["../../../../etc/passwd", "/etc/passwd", "../dnsmasq.conf"]) {
      const r = get(bad);
      expect(r.status, bad).not.toBe(0);
    }
  });
});
