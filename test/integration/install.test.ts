import { type ChildProcess, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KILN, kiln, sharedBuild, until } from "./helpers.js";
import { Lan } from "./lan.js";

// Install to disk over the network, end to end: QEMU clients (TCG) with blank
// or used virtio disks PXE-boot from `kiln serve` (proxy-DHCP beside a site
// DHCP server, in namespaces this test makes), run the netboot initrd's
// installer, and from then on boot their disk.
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-install-"));
const lan = new Lan(`ki${process.pid % 10000}`, OUT);
const DB = join(OUT, "fleet.sqlite");
const INV = join(OUT, "inventory.yaml");
let IMG = "";
let serveProc: ChildProcess | undefined;
let serveLog = "";
let kilnNs = "";

afterAll(() => {
  lan.close();
  rmSync(OUT, { recursive: true, force: true });
});

type Shown = {
  state: string;
  install: { state: string; reason: string | null; bytes: number; total: number } | null;
  installs: { state: string; seconds: number | null }[];
};
/** `kiln machines show MAC`, or undefined while the machine has not asked yet. */
const show = (mac: string): Shown | undefined => {
  const r = spawnSync(process.execPath, [KILN, "machines", "show", mac, "--db", DB, "--json"], {
    encoding: "utf8",
  });
  // --json makes the error JSON on stdout too.
  if (r.status !== 0 && /MACHINE_UNKNOWN/.test(r.stdout + r.stderr)) return undefined;
  if (r.status !== 0) throw new Error(`${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout) as Shown;
};
const sha256 = (f: string) =>
  spawnSync("sha256sum", [f], { encoding: "utf8" }).stdout.split(" ")[0];

async function startServe(): Promise<void> {
  serveLog = "";
  serveProc = lan.run(
    kilnNs,
    process.execPath,
    [KILN, "serve", "--inventory", INV, "--interface", "eth0", "--db", DB, "--rate-limit", "0"],
    (t) => {
      serveLog += t;
    },
  );
  await until("kiln serve to start", () => serveLog.includes("dnsmasq: DHCP proxy"), 30_000);
}

/** A blank (sparse) disk of `mib` MiB. */
function blankDisk(name: string, mib: number): string {
  const f = join(OUT, name);
  writeFileSync(f, "");
  spawnSync("truncate", ["-s", `${mib}M`, f]);
  return f;
}

beforeAll(async () => {
  const nb = join(sharedBuild("examples/netboot.yaml"), "netboot.netboot");
  IMG = sharedBuild("examples/minimal.yaml");
  const site = lan.host("site", "10.79.0.1/24");
  kilnNs = lan.host("kiln", "10.79.0.2/24");
  lan.run(site, "dnsmasq", [
    "--keep-in-foreground",
    "--port=0",
    "--interface=eth0",
    "--bind-interfaces",
    "--dhcp-range=10.79.0.100,10.79.0.200,1h",
    `--dhcp-leasefile=${join(OUT, "site.leases")}`,
    "--log-facility=-",
    "--user=root",
  ]);
  writeFileSync(
    INV,
    `profiles:
  rack: { artifact: ${nb}, install: { image: ${IMG} } }
groups:
  - { name: rack1, profile: rack, selector: { serial: [BLANK-BIOS, BLANK-UEFI, USED-1, CUT-1] } }
`,
  );
  await startServe();
}, 1_800_000);

// Two clients at once (two cores, one TCG thread each); the UEFI case kills the
// server, so it runs after them.
describe.concurrent("kiln serve: install to disk over the network", () => {
  it("BIOS: a blank disk is installed, verified, and booted from ever after; the spec's tests pass on it", async () => {
    const mac = "52:54:00:79:00:01";
    const disk = blankDisk("bios.raw", 3072);
    const con = await lan.client({
      mac,
      serial: "BLANK-BIOS",
      disks: [disk],
      done: (c) =>
        /kiln: .* is installed; booting from its disk[\s\S]*GRUB[\s\S]*login: ?$/m.test(c),
      timeoutMs: 900_000,
    });
    expect(con).toMatch(/kiln-install: writing minimal version \S+ \(\d+ MiB\) to \/dev\/vda/);
    expect(con).toMatch(
      /kiln-install: installed minimal .* \(every extent's sha256 matches\); rebooting/,
    );
    expect(con).toContain("Booting from SAN device 0x80");
    const m = show(mac)!;
    expect(m.install).toMatchObject({ state: "installed", reason: null });
    expect(m.install!.bytes).toBe(m.install!.total);
    expect(m.installs[0]).toMatchObject({ state: "installed" });
    expect(m.installs[0]!.seconds).toBeGreaterThan(0);
    // The installed disk is the build's system: its own tests, disk growth included.
    const dir = join(OUT, "installed");
    mkdirSync(dir);
    copyFileSync(join(IMG, "manifest.json"), join(dir, "manifest.json"));
    spawnSync("mv", [disk, join(dir, "minimal.raw")]);
    const t = kiln(["test", dir, "--on", "bios", "--json"], { timeout: 900_000 });
    expect(t.code, `${t.stdout}\n${t.stderr}`).toBe(0);
    expect(JSON.parse(t.stdout).ok).toBe(true);
    // An operator's reinstall puts it back in the install path.
    const re = kiln(["machines", "reinstall", mac, "--db", DB]);
    expect(re.code, re.stderr).toBe(0);
    expect(show(mac)!.install).toBeNull();
    const again = spawnSync(
      "ip",
      [
        "netns",
        "exec",
        kilnNs,
        "curl",
        "-s",
        `http://10.79.0.2:8080/ipxe?mac=${mac}&serial=BLANK-BIOS`,
      ],
      { encoding: "utf8" },
    ).stdout;
    expect(again).toMatch(/kiln\.install=http:\/\/10\.79\.0\.2:8080\/install\/[0-9a-f]{32}/);
  }, 1_800_000);

  it("a disk that holds a partition table and data is refused, untouched, with the reason on record", async () => {
    const mac = "52:54:00:79:00:03";
    const disk = blankDisk("used.raw", 2048);
    spawnSync("sh", ["-c", `echo 'label: gpt\n,100M,L' | sfdisk -q ${disk}`]);
    spawnSync("sh", ["-c", `echo precious | dd of=${disk} bs=1M seek=10 conv=notrunc status=none`]);
    const before = sha256(disk);
    await lan.client({
      mac,
      serial: "USED-1",
      disks: [disk],
      done: (c) => /kiln-install: halted/.test(c),
      timeoutMs: 300_000,
    });
    expect(sha256(disk)).toBe(before);
    const m = show(mac)!;
    expect(m.state).toBe("install-failed");
    expect(m.install?.reason).toMatch(/refused: no empty disk .*vda/);
  }, 600_000);
});

describe("kiln serve: install to disk, the server killed mid-write", () => {
  it("UEFI: the server killed mid-write leaves the machine not installed; the next boot retries and boots its disk", async () => {
    const mac = "52:54:00:79:00:02";
    const disk = blankDisk("uefi.raw", 3072);
    let killedAt = 0;
    let restarted = false;
    const con = await lan.client({
      mac,
      serial: "BLANK-UEFI",
      firmware: "uefi",
      disks: [disk],
      done: async (c) => {
        if (!killedAt) {
          const i = show(mac)?.install;
          if (i?.state === "installing" && i.bytes >= 32 << 20) {
            killedAt = i.bytes;
            serveProc!.kill("SIGKILL");
            expect(show(mac)?.install?.state).toBe("installing");
            await startServe();
            restarted = true;
          }
          return false;
        }
        return (
          restarted && /is installed; booting from its disk[\s\S]*GRUB[\s\S]*login: ?$/m.test(c)
        );
      },
      timeoutMs: 1_200_000,
    });
    expect(killedAt).toBeGreaterThan(0);
    expect(con).toMatch(/kiln-install: FAILED: the image stream .* broke off/);
    expect(con).toMatch(/kiln-install: installed minimal .* \(every extent's sha256 matches\)/);
    const m = show(mac)!;
    expect(m.install?.state).toBe("installed");
    // Two attempts began; the second ended installed.
    expect(m.installs.map((e) => e.state)).toEqual(["installed", "installing", "installing"]);
  }, 1_800_000);
});
