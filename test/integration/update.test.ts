import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sshArgs } from "../../src/runtime/ssh.js";

// A/B updates end to end on one QEMU machine (BIOS, TCG) whose disk persists
// across boots. QEMU runs with -no-reboot, so every reboot of the guest ends
// QEMU, and the grubenv on the ESP is read with grub-editenv in between.
const ROOT = resolve(import.meta.dirname, "../..");
const KILN = join(ROOT, "bin/kiln.js");
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-update-"));
const DISK = join(OUT, "device.raw");
const SSH_KEY = join(OUT, "id");

function run(cmd: string, args: string[], input?: string | Buffer) {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 1_200_000, input, cwd: ROOT });
  return { code: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}
function ok(cmd: string, args: string[]): string {
  const r = run(cmd, args);
  if (r.code !== 0)
    throw new Error(`${cmd} ${args.join(" ")} (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}
const kiln = (...a: string[]) => ok(process.execPath, [KILN, ...a]);

/** A version of the A/B example, differing only in what is given. */
function spec(
  name: string,
  o: { version: string; outputs?: string; health?: string; cmdline?: string },
): string {
  const file = join(OUT, `${name}.yaml`);
  writeFileSync(
    file,
    `name: ${name}
extends: ${join(ROOT, "examples/ab.yaml")}
version: "${o.version}"
outputs: [${o.outputs ?? "directory"}]
${o.cmdline ? `kernel: { cmdline: "${o.cmdline}" }\n` : ""}update:
  compatible: kiln-it-ab
  keyring: ${join(OUT, "keys/ca.cert.pem")}
${o.health ? `  health:\n    - ${o.health}\n` : ""}`,
  );
  return file;
}

function espOffset(): number {
  const t = JSON.parse(ok("sfdisk", ["--json", DISK])) as {
    partitiontable: { sectorsize?: number; partitions: { start: number; name?: string }[] };
  };
  const esp = t.partitiontable.partitions.find((p) => p.name === "esp")!;
  return esp.start * (t.partitiontable.sectorsize ?? 512);
}

/** The device's grubenv, as grub-editenv lists it. */
function grubenv(): Record<string, string> {
  const f = join(OUT, "grubenv");
  rmSync(f, { force: true });
  ok("mcopy", ["-n", "-i", `${DISK}@@${espOffset()}`, "::/grub/grubenv", f]);
  return Object.fromEntries(
    ok("grub-editenv", [f, "list"])
      .trim()
      .split("\n")
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
}

class Machine {
  proc?: ChildProcess;
  console = "";
  exited?: Promise<void>;
  port = 0;

  async boot(): Promise<void> {
    this.console = "";
    this.port = 20000 + Math.floor(Math.random() * 20000);
    const pub = readFileSync(`${SSH_KEY}.pub`, "utf8");
    this.proc = spawn(
      "qemu-system-x86_64",
      [
        "-machine",
        "q35",
        // One TCG thread for both vCPUs: QEMU 7.2's multi-threaded TCG now and then loses a
        // vCPU's timer interrupts (an RCU stall in the guest), and this test's boots count
        // GRUB tries, so it cannot simply boot again as `kiln test` does.
        "-accel",
        "tcg,thread=single",
        "-smp",
        "2",
        "-m",
        "1024",
        "-nodefaults",
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
        "-device",
        "virtio-rng-pci",
        "-drive",
        `file=${DISK},if=virtio,format=raw`,
        "-netdev",
        `user,id=n0,hostfwd=tcp:127.0.0.1:${this.port}-:22`,
        "-device",
        "virtio-net-pci,netdev=n0",
        "-smbios",
        `type=11,value=io.systemd.credential.binary:ssh.authorized_keys.root=${Buffer.from(pub).toString("base64")}`,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.proc.stdout!.on("data", (b: Buffer) => {
      this.console += b.toString("utf8");
    });
    this.proc.stderr!.on("data", (b: Buffer) => {
      this.console += b.toString("utf8");
    });
    const p = this.proc;
    this.exited = new Promise((r) => p.on("close", () => r()));
  }

  /** Wait for a console line; fails with the console tail. */
  async waitFor(re: RegExp, ms = 300_000): Promise<RegExpExecArray> {
    const until = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.console);
      if (m) return m;
      if (Date.now() > until || this.proc?.exitCode !== null || this.proc?.signalCode)
        if (!re.exec(this.console))
          throw new Error(`no ${re} on the console; last lines:\n${this.console.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Boot until kiln-health has judged the slot; returns the slot and the verdict. */
  async bootJudged(): Promise<{ slot: string; healthy: boolean }> {
    await this.boot();
    const m = await this.waitFor(/kiln-health: slot ([AB]) (healthy|unhealthy)/);
    return { slot: m[1]!, healthy: m[2] === "healthy" };
  }

  /** Wait for the guest to end QEMU by itself (a reboot, with -no-reboot). */
  async ended(ms = 300_000): Promise<void> {
    const t = setTimeout(() => this.proc?.kill("SIGKILL"), ms);
    await this.exited;
    clearTimeout(t);
  }

  /** ssh's arguments for a command on the device, as `kiln ssh` builds them. */
  sshArgv(command: string): string[] {
    return sshArgs({ name: "device", port: this.port, key: SSH_KEY, pid: 0, image: DISK }, "root", [
      command,
    ]);
  }

  ssh(command: string, input?: Buffer) {
    return run("ssh", this.sshArgv(command), input);
  }

  async sshReady(): Promise<void> {
    for (let i = 0; i < 60; i++) {
      if (this.ssh("true").code === 0) return;
      await new Promise((r) => setTimeout(r, 2000));
    }
    throw new Error("ssh never answered");
  }

  async reboot(): Promise<void> {
    this.ssh("systemctl reboot");
    await this.ended();
  }

  async kill(): Promise<void> {
    this.proc?.kill("SIGKILL");
    await this.exited;
  }
}

const m = new Machine();
let server: ChildProcess;
let base = "";
const bundles: Record<string, string> = {};

/**
 * Host-side work done while the device boots and installs: the bundles, made
 * one after another at the lowest CPU priority by a process of their own (this
 * one blocks in spawnSync while ssh runs), each awaited by the first test that
 * uses it. Every step leaves NAME.log and then NAME.ok or NAME.failed in BG.
 */
const BG = join(OUT, "background");
const RUNNER = `const { spawnSync } = require("node:child_process"), fs = require("node:fs"), path = require("node:path");
for (const s of JSON.parse(process.argv[2])) {
  const log = path.join(process.argv[1], s.name + ".log");
  const fd = fs.openSync(log, "w");
  const r = spawnSync(s.argv[0], s.argv.slice(1), { stdio: ["ignore", fd, fd] });
  fs.closeSync(fd);
  fs.writeFileSync(path.join(process.argv[1], s.name + (r.status === 0 ? ".ok" : ".failed")), String(r.status ?? r.signal));
}`;
let background: ChildProcess | undefined;

/** Wait for background steps; a failed one fails the test with its output. */
async function ready(...names: string[]): Promise<void> {
  const end = Date.now() + 1_200_000;
  for (const name of names)
    for (;;) {
      if (existsSync(join(BG, `${name}.ok`))) break;
      if (existsSync(join(BG, `${name}.failed`)))
        throw new Error(`${name} failed:\n${readFileSync(join(BG, `${name}.log`), "utf8")}`);
      if (background?.exitCode !== null || background.signalCode !== null || Date.now() > end)
        throw new Error(`background step ${name} never finished`);
      await new Promise((r) => setTimeout(r, 500));
    }
}

beforeAll(async () => {
  ok("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", SSH_KEY]);
  kiln("keys", "init", join(OUT, "keys"));
  kiln("keys", "init", join(OUT, "other-keys"), "--subject", "someone else");
  const key = [
    "--key",
    join(OUT, "keys/signing.key.pem"),
    "--cert",
    join(OUT, "keys/signing.cert.pem"),
  ];
  // v1 is the disk the device starts with; the others become bundles.
  kiln("build", spec("v1", { version: "1.0", outputs: "disk" }), "-o", join(OUT, "v1"));
  copyFileSync(join(OUT, "v1/v1.raw"), DISK);
  const versions = {
    v2: spec("v2", { version: "2.0" }),
    sick: spec("sick", { version: "3.0", health: '{ name: always fails, run: "false" }' }),
    panic: spec("panic", { version: "3.1", cmdline: "init=/no-such-init" }),
  };
  const keyring = ["--keyring", join(OUT, "keys/ca.cert.pem")];
  const kilnBg = (name: string, ...a: string[]) => ({ name, argv: [process.execPath, KILN, ...a] });
  const bundle = (name: keyof typeof versions) => {
    bundles[name] = join(OUT, `${name}.raucb`);
    return [
      kilnBg(`${name}-build`, "build", versions[name], "-o", join(OUT, name)),
      kilnBg(name, "bundle", join(OUT, name), ...key, ...keyring, "-o", bundles[name]!),
    ];
  };
  /** kiln's makeBundle, as dist/ has it (the global setup built dist/ from the sources). */
  const make = (name: string, o: Record<string, string>) => ({
    name,
    argv: [
      process.execPath,
      "--input-type=module",
      "-e",
      `const { makeBundle } = await import(${JSON.stringify(join(ROOT, "dist/deliver/bundle.js"))});
       await makeBundle(JSON.parse(process.argv[1]));`,
      JSON.stringify(o),
    ],
  });
  // An older version, properly signed: v2's root filesystem bundled as 0.9 (its slot would say 0.9).
  bundles.old = join(OUT, "old.raucb");
  // In the order the tests need them.
  const steps = [
    ...bundle("v2"),
    // v2's bundle re-signed by another CA; v2's root filesystem for another compatible.
    {
      name: "foreign",
      argv: [
        "rauc",
        "resign",
        `--keyring=${join(OUT, "keys/ca.cert.pem")}`,
        `--signing-keyring=${join(OUT, "other-keys/ca.cert.pem")}`,
        `--cert=${join(OUT, "other-keys/signing.cert.pem")}`,
        `--key=${join(OUT, "other-keys/signing.key.pem")}`,
        bundles.v2!,
        join(OUT, "foreign.raucb"),
      ],
    },
    make("othercompat", {
      rootfs: join(OUT, "v2/v2.rootfs"),
      out: join(OUT, "othercompat.raucb"),
      key: join(OUT, "keys/signing.key.pem"),
      cert: join(OUT, "keys/signing.cert.pem"),
      compatible: "someone-elses-board",
    }),
    kilnBg("old", "bundle", join(OUT, "v2"), ...key, "--version", "0.9", "-o", bundles.old),
    ...bundle("sick"),
    ...bundle("panic"),
  ];
  mkdirSync(BG);
  // A process group of its own, so that afterAll can end it with whatever it runs.
  background = spawn(
    "nice",
    ["-n", "19", process.execPath, "-e", RUNNER, BG, JSON.stringify(steps)],
    { cwd: ROOT, stdio: "ignore", detached: true },
  );
  // A web server in a process of its own: this one blocks in spawnSync while the guest downloads.
  server = spawn(
    process.execPath,
    [
      "-e",
      `const http = require("node:http"), fs = require("node:fs"), path = require("node:path");
       const s = http.createServer((req, res) => {
         const f = path.join(process.argv[1], path.basename(req.url));
         fs.stat(f, (err, st) => {
           if (err) return res.writeHead(404).end();
           res.writeHead(200, { "content-length": st.size });
           fs.createReadStream(f).pipe(res);
         });
       });
       s.listen(0, "127.0.0.1", () => console.log(s.address().port));`,
      OUT,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const port = await new Promise<string>((r) =>
    server.stdout!.once("data", (b) => r(String(b).trim())),
  );
  // From inside QEMU's user network the host's loopback is 10.0.2.2.
  base = `http://10.0.2.2:${port}`;
}, 1_800_000);

afterAll(async () => {
  if (background && background.exitCode === null && background.signalCode === null) {
    const gone = new Promise((r) => background!.on("close", r));
    process.kill(-background.pid!, "SIGKILL");
    await gone;
  }
  await m.kill().catch(() => {});
  server?.kill();
  rmSync(OUT, { recursive: true, force: true });
});

describe.sequential("A/B updates (QEMU, BIOS, TCG)", () => {
  it("v1 boots from slot A and marks it good", async () => {
    expect(grubenv()).toMatchObject({ ORDER: "A B", A_OK: "1", A_TRY: "0", B_OK: "0" });
    expect(await m.bootJudged()).toEqual({ slot: "A", healthy: true });
    await m.sshReady();
    expect(m.ssh("cat /etc/kiln/release").stdout).toContain("VERSION=1.0");
    m.ssh("sync");
    expect(grubenv()).toMatchObject({ A_OK: "1", A_TRY: "0", B_OK: "0" });
  });

  it("installs v2 over HTTP into slot B; v2 boots on trial and is marked good", async () => {
    await ready("v2");
    const r = m.ssh(`rauc install ${base}/v2.raucb`);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    m.ssh("sync");
    expect(grubenv()).toMatchObject({ ORDER: "B A", B_OK: "1", B_TRY: "0", A_OK: "1" });
    await m.reboot();
    expect(await m.bootJudged()).toEqual({ slot: "B", healthy: true });
    await m.sshReady();
    expect(m.ssh("cat /etc/kiln/release").stdout).toContain("VERSION=2.0");
    m.ssh("sync");
    expect(grubenv()).toMatchObject({ ORDER: "B A", B_OK: "1", B_TRY: "0" });
  });

  it("refuses unsigned, foreign-signed, altered and incompatible bundles, changing nothing", async () => {
    // Made from v2's signed bundle: signature stripped; one byte flipped. The one
    // re-signed by another CA and the one for another compatible come from beforeAll.
    await ready("v2", "foreign", "othercompat");
    const v2 = readFileSync(bundles.v2!);
    const sigSize = Number(v2.readBigUInt64BE(v2.length - 8));
    writeFileSync(join(OUT, "unsigned.raucb"), v2.subarray(0, v2.length - 8 - sigSize));
    const flipped = Buffer.from(v2);
    flipped[Math.floor((v2.length - 8 - sigSize) / 2)]! ^= 0xff;
    writeFileSync(join(OUT, "flipped.raucb"), flipped);
    const before = grubenv();
    // The slot an install would write: v2 runs from B, so A.
    const inactive = () => m.ssh("blkid -o value -s UUID /dev/disk/by-partlabel/root-a").stdout;
    const uuidA = inactive();
    expect(uuidA).not.toBe("");
    for (const [bad, why] of [
      ["unsigned", /signature|sign|bundle/i],
      ["foreign", /signature|verif|certificate/i],
      // RAUC's client names the failing handler; the handler's reason is in RAUC's journal.
      ["flipped", /Pre-install handler error/i],
      ["othercompat", /compatible/i],
    ] as const) {
      const r = m.ssh(`rauc install ${base}/${bad}.raucb`);
      expect(r.code, `${bad}: ${r.stdout}${r.stderr}`).not.toBe(0);
      expect(r.stdout + r.stderr, bad).toMatch(why);
      m.ssh("sync");
      expect(grubenv(), bad).toEqual(before);
      expect(inactive(), bad).toBe(uuidA);
    }
    expect(m.ssh("journalctl -u rauc --no-pager").stdout).toContain(
      "the bundle fails its verity hash check",
    );
  });

  it("refuses an older signed bundle, changing nothing; the operator's allowance lets it in once", async () => {
    await ready("old");
    const before = grubenv();
    const slotA = () => m.ssh("blkid -o value -s UUID /dev/disk/by-partlabel/root-a").stdout;
    const uuidA = slotA();
    const r = m.ssh(`rauc install ${base}/old.raucb`);
    expect(r.code, r.stdout + r.stderr).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/Pre-install handler error/i);
    m.ssh("sync");
    expect(grubenv()).toEqual(before);
    expect(slotA()).toBe(uuidA);
    expect(m.ssh("journalctl -u rauc --no-pager").stdout).toContain(
      "kiln: refusing the bundle: bundle version 0.9 is older than the running 2.0 (to allow it once: touch /run/kiln/allow-downgrade)",
    );
    // Allowed: it installs into A and takes the allowance with it.
    const allowed = m.ssh(
      `mkdir -p /run/kiln && touch /run/kiln/allow-downgrade && rauc install ${base}/old.raucb`,
    );
    expect(allowed.code, allowed.stdout + allowed.stderr).toBe(0);
    expect(m.ssh("test -e /run/kiln/allow-downgrade").code).toBe(1);
    expect(m.ssh("journalctl -u rauc --no-pager").stdout).toContain(
      "installing although bundle version 0.9 is older than the running 2.0: allowed by /run/kiln/allow-downgrade",
    );
    const a = m.ssh(
      "mount -o ro /dev/disk/by-partlabel/root-a /mnt && cat /mnt/etc/kiln/release; umount /mnt",
    );
    expect(a.stdout, a.stderr).toContain("VERSION=0.9");
    m.ssh("sync");
    expect(grubenv()).toMatchObject({ ORDER: "A B", A_OK: "1", A_TRY: "0" });
    // Back to v2 first, as the tests below expect.
    expect(m.ssh("rauc status mark-active booted").code).toBe(0);
    m.ssh("sync");
    expect(grubenv()).toMatchObject({ ORDER: "B A", B_OK: "1", B_TRY: "0" });
  });

  it("a power cut while the inactive slot is written leaves the old version booting; a retried install succeeds", async () => {
    await ready("sick");
    // Stream rauc's progress and cut the power once it writes the slot.
    const ssh = spawn("ssh", m.sshArgv(`rauc install --progress ${base}/sick.raucb`));
    let progress = "";
    ssh.stdout.on("data", (b: Buffer) => (progress += b));
    ssh.stderr.on("data", (b: Buffer) => (progress += b));
    for (let i = 0; i < 600 && !/Copying image|Updating slots/i.test(progress); i++)
      await new Promise((r) => setTimeout(r, 500));
    expect(progress).toMatch(/Copying image|Updating slots/i);
    await new Promise((r) => setTimeout(r, 1500));
    await m.kill();
    ssh.kill();
    // RAUC takes the target slot out of ORDER's bootable set before writing it.
    expect(grubenv()).toMatchObject({ ORDER: "B A", B_OK: "1", A_OK: "0" });
    expect(await m.bootJudged()).toEqual({ slot: "B", healthy: true });
    await m.sshReady();
    expect(m.ssh("cat /etc/kiln/release").stdout).toContain("VERSION=2.0");
    const r = m.ssh(`rauc install ${base}/sick.raucb`);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    m.ssh("sync");
    expect(grubenv()).toMatchObject({ ORDER: "A B", A_OK: "1", A_TRY: "0" });
  });

  it("a version whose health check fails gets 3 tries, then GRUB falls back to v2 by itself", async () => {
    await m.reboot();
    for (let tri = 1; tri <= 3; tri++) {
      expect(await m.bootJudged(), `try ${tri}`).toEqual({ slot: "A", healthy: false });
      await m.ended();
      expect(grubenv(), `after try ${tri}`).toMatchObject({ A_OK: "1", A_TRY: String(tri) });
    }
    expect(await m.bootJudged()).toEqual({ slot: "B", healthy: true });
    await m.sshReady();
    expect(m.ssh("cat /etc/kiln/release").stdout).toContain("VERSION=2.0");
    expect(m.ssh("rauc status --output-format=json").stdout).toMatch(
      /"rootfs\.0":\{[^}]*"boot_status":"bad"/,
    );
    m.ssh("sync");
    expect(grubenv()).toMatchObject({ ORDER: "B A", A_OK: "0", B_OK: "1", B_TRY: "0" });
  });

  it("a version whose kernel cannot boot (installed from a file) falls back the same way", async () => {
    await ready("panic");
    const copy = m.ssh("cat > /var/lib/kiln/data/panic.raucb", readFileSync(bundles.panic!));
    expect(copy.code, copy.stderr).toBe(0);
    const r = m.ssh("rauc install /var/lib/kiln/data/panic.raucb");
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await m.reboot();
    for (let tri = 1; tri <= 3; tri++) {
      await m.boot();
      await m.waitFor(/Kernel panic/);
      await m.ended();
      expect(grubenv(), `after try ${tri}`).toMatchObject({ A_OK: "1", A_TRY: String(tri) });
    }
    expect(await m.bootJudged()).toEqual({ slot: "B", healthy: true });
    m.ssh("sync");
    expect(grubenv()).toMatchObject({ ORDER: "B A", A_OK: "0", B_OK: "1" });
  });
});
