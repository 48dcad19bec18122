import { execFileSync, spawnSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KILN, kiln, ours, ROOT } from "./helpers.js";

// One real build of the minimal example, shared by every check in this file.
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-"));
const DIR = join(OUT, "minimal");

function debugfsCat(image: string, offset: number, path: string): string {
  // debugfs reads the ext4 image at its offset inside the disk, without mounting.
  return execFileSync("debugfs", ["-R", `cat ${path}`, `${image}?offset=${offset}`], {
    stdio: ["ignore", "pipe", "ignore"],
  }).toString();
}

let buildOut: { code: number | null; stdout: string; stderr: string };
let manifest: {
  artifacts: { format: string; path: string; size: number; sha256: string }[];
  packages: { name: string }[];
  sizes: { installed: number };
  disk: { partitions: { name: string; offset: number }[] };
  kernelPackage: { name: string; version: string; offered: { version: string; suite: string }[] };
  root: { bootstrappedAt: string; suites: { suite: string; date: string }[] };
  tests: { name?: string }[];
  reproducible: { differs: string[] };
};

afterAll(() => rmSync(OUT, { recursive: true, force: true }));

beforeAll(() => {
  buildOut = kiln(["build", "examples/minimal.yaml", "--output", DIR]);
  if (buildOut.code !== 0) throw new Error(`build failed:\n${buildOut.stderr}`);
  manifest = JSON.parse(readFileSync(join(DIR, "manifest.json"), "utf8"));
});

describe("kiln build examples/minimal.yaml", () => {
  it("writes the artifacts the spec asks for, with sizes and hashes", () => {
    expect(manifest.artifacts.map((a) => a.format).sort()).toEqual(["directory", "disk", "qcow2"]);
    const raw = manifest.artifacts.find((a) => a.format === "disk")!;
    expect(statSync(join(DIR, raw.path)).size).toBe(raw.size);
    const sha = execFileSync("sha256sum", [join(DIR, raw.path)])
      .toString()
      .split(" ")[0];
    expect(raw.sha256).toBe(sha);
    expect(manifest.packages.map((p) => p.name)).toContain("openssh-server");
    // The spec generates admin's password: that hash is all two builds of it differ in.
    expect(manifest.reproducible.differs).toEqual([
      "admin's password hash in /etc/shadow and /etc/shadow- (a new password each build)",
    ]);
  });

  it("has a GPT with BIOS boot, ESP and root partitions", () => {
    const t = JSON.parse(
      execFileSync("sfdisk", ["--json", join(DIR, "minimal.raw")]).toString(),
    ).partitiontable;
    expect(t.label).toBe("gpt");
    expect(t.partitions.map((p: { name: string; type: string }) => [p.name, p.type])).toEqual([
      ["bios", "21686148-6449-6E6F-744E-656564454649"],
      ["esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"],
      ["root-a", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"],
    ]);
    for (const p of t.partitions) expect(p.start % 2048).toBe(0);
  });

  it("has the spec's hostname and a hashed password inside the ext4 root", () => {
    const image = join(DIR, "minimal.raw");
    const root = manifest.disk.partitions.find((p) => p.name === "root-a")!;
    expect(debugfsCat(image, root.offset, "/etc/hostname")).toBe("minimal\n");
    const shadow = debugfsCat(image, root.offset, "/etc/shadow");
    const admin = shadow.split("\n").find((l) => l.startsWith("admin:"))!;
    expect(admin.split(":")[1]).toMatch(/^\$6\$[^$]+\$[./A-Za-z0-9]{86}$/);
    // root stays locked
    expect(
      shadow
        .split("\n")
        .find((l) => l.startsWith("root:"))!
        .split(":")[1],
    ).toMatch(/^[!*]/);
    const label = execFileSync("blkid", [
      "-p",
      "-O",
      String(root.offset),
      "-s",
      "LABEL",
      "-o",
      "value",
      image,
    ])
      .toString()
      .trim();
    expect(label).toBe("root-a");
  });

  it("puts GRUB's EFI binary, grub.cfg and grubenv on the ESP", () => {
    const esp = manifest.disk.partitions.find((p) => p.name === "esp")!;
    const img = `${join(DIR, "minimal.raw")}@@${esp.offset}`;
    const env = { ...process.env, MTOOLS_SKIP_CHECK: "1" };
    expect(execFileSync("mdir", ["-b", "-i", img, "::/EFI/BOOT"], { env }).toString()).toContain(
      "BOOTX64.EFI",
    );
    const cfg = execFileSync("mtype", ["-i", img, "::/grub/grub.cfg"], { env }).toString();
    expect(cfg).toMatch(
      /linux \/vmlinuz root=UUID=[0-9a-f-]{36} rw console=tty0 console=ttyS0,115200/,
    );
    const grubenv = execFileSync("mtype", ["-i", img, "::/grub/grubenv"], { env }).toString();
    expect(grubenv).toContain("kiln_slot=a\n");
  });

  it("writes the generated password only to a 0600 credentials file", () => {
    const cred = join(DIR, "credentials");
    expect(statSync(cred).mode & 0o777).toBe(0o600);
    const [user, password] = readFileSync(cred, "utf8").trim().split(":");
    expect(user).toBe("admin");
    expect(password).toMatch(/^[A-Za-z2-9]{20}$/);
    // The build names the file, never the password (terminals end up in CI logs)...
    expect(buildOut.stdout).toContain(`generated passwords (admin): ${cred} (mode 0600)`);
    expect(buildOut.stdout).not.toContain(password!);
    expect(buildOut.stderr).not.toContain(password!);
    // ...and nowhere in any artifact or the manifest.
    for (const f of ["minimal.raw", "minimal.qcow2", "manifest.json"]) {
      const r = spawnSync("grep", ["-c", "-a", "-F", password!, join(DIR, f)]);
      expect(r.status, `${f} contains the plaintext password`).toBe(1);
    }
    const g = spawnSync("grep", ["-r", "-l", "-F", password!, join(DIR, "minimal.rootfs")]);
    expect(g.status).toBe(1);
  });

  it("meets the minimal profile: no docs, man pages, apt lists", () => {
    const rootfs = join(DIR, "minimal.rootfs");
    expect(existsSync(join(rootfs, "usr/share/man/man1"))).toBe(false);
    expect(
      readdirSync(join(rootfs, "var/lib/apt/lists")).filter((f) => f !== "partial" && f !== "lock"),
    ).toEqual([]);
    expect(readdirSync(join(rootfs, "usr/share/doc/openssh-server"))).toEqual(["copyright"]);
    expect(existsSync(join(rootfs, "etc/ssh/ssh_host_ed25519_key"))).toBe(false);
  });

  it("inspect reports packages and artifacts as JSON", () => {
    const r = kiln(["inspect", DIR, "--json"]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.packageCount).toBe(manifest.packages.length);
    expect(j.largestPackages[0].name).toMatch(/^linux-image/);
    expect(j.artifacts).toHaveLength(3);
  });

  it("boots the directory in systemd-nspawn to multi-user", () => {
    const r = kiln([
      "boot",
      join(DIR, "minimal.rootfs"),
      "--until-ready",
      "--json",
      "--timeout",
      "60",
    ]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ target: "nspawn", ready: true });
  });

  it("keeps apt working: the minimal root installs and runs a package (on an overlay, the artifact untouched)", () => {
    const rootfs = join(DIR, "minimal.rootfs");
    const r = spawnSync(
      "systemd-nspawn",
      [
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--volatile=overlay",
        "-D",
        rootfs,
        "sh",
        "-c",
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends hello >/dev/null && hello",
      ],
      { encoding: "utf8", timeout: 300_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("Hello, world!");
    expect(existsSync(join(rootfs, "usr/bin/hello"))).toBe(false);
  });

  it("boots the disk image's root in systemd-nspawn, leaving no loop device or mount", () => {
    const r = kiln([
      "boot",
      join(DIR, "minimal.qcow2"),
      "--until-ready",
      "--json",
      "--timeout",
      "60",
    ]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ target: "nspawn", ready: true });
    // (This file's own: the file running beside it may hold loop devices and mounts.)
    expect(execFileSync("losetup", ["-a"]).toString()).not.toContain(process.env.TMPDIR!);
    expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(process.env.TMPDIR!);
    // kiln waits for nspawn itself, not only for the `script` wrapper around it.
    expect(ours("systemd-nspawn", { exact: true })).toEqual([]);
  });

  it("is built from and keeps bookworm-updates and bookworm-security, with the newest kernel they offered", () => {
    const sources = readFileSync(join(DIR, "minimal.rootfs/etc/apt/sources.list"), "utf8");
    expect(sources).toContain("deb http://deb.debian.org/debian bookworm-updates main\n");
    expect(sources).toContain("deb http://deb.debian.org/debian-security bookworm-security main\n");
    // The cached root is keyed on each suite's Release date, which the manifest records.
    expect(manifest.root.suites.map((x) => x.suite)).toEqual([
      "bookworm",
      "bookworm-updates",
      "bookworm-security",
    ]);
    for (const x of manifest.root.suites) expect(Date.parse(x.date)).toBeGreaterThan(0);
    // apt's own view at bootstrap time: the installed kernel is the highest version any suite
    // offered (madison lists newest first), and -security or -updates offered it.
    const k = manifest.kernelPackage;
    expect(k.name).toBe("linux-image-cloud-amd64");
    expect(k.offered.map((o) => o.suite)).toContain("bookworm-security");
    for (const o of k.offered)
      expect(
        spawnSync("dpkg", ["--compare-versions", k.version, "ge", o.version]).status,
        `${k.version} >= ${o.version} (${o.suite})`,
      ).toBe(0);
    expect(k.offered.filter((o) => o.version === k.version).map((o) => o.suite)).toEqual(
      expect.arrayContaining([expect.stringMatching(/^bookworm-(security|updates)$/)]),
    );
  });

  it("has sudo for group sudo, a system bus, and units that grow the root", () => {
    const names = manifest.packages.map((p) => p.name);
    expect(names).toEqual(expect.arrayContaining(["sudo", "dbus-broker"]));
    const rootfs = join(DIR, "minimal.rootfs");
    expect(existsSync(join(rootfs, "usr/lib/repart.d/50-root.conf"))).toBe(true);
    // An absolute link inside the image: look at the link itself, not at the host's path.
    expect(
      lstatSync(
        join(rootfs, "etc/systemd/system/local-fs.target.wants/kiln-growfs-root.service"),
      ).isSymbolicLink(),
    ).toBe(true);
  });

  it(`boots the disk in QEMU with uefi to a login prompt`, () => {
    const r = kiln([
      "vm",
      join(DIR, "minimal.qcow2"),
      "--firmware",
      "uefi",
      "--accel",
      "tcg",
      "--until-ready",
      "--json",
      "--timeout",
      "240",
    ]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ ready: true, firmware: "uefi", accel: "tcg" });
    // Where the seconds went, though the console is quiet: the guest's own report fills
    // in the kernel, initrd and userspace, and names its slowest units.
    for (const phase of ["firmware", "loader", "kernel", "initrd", "userspace"])
      expect(j.breakdown[phase], phase).toBeGreaterThan(0);
    const sum = Object.values(j.breakdown as Record<string, number>).reduce((a, b) => a + b, 0);
    expect(Math.abs(sum - j.seconds)).toBeLessThan(0.6);
    expect(j.slowest.length).toBeGreaterThan(3);
    expect(j.slowest.map((u: { unit: string }) => u.unit)).toContain("systemd-journald.service");
    console.log(`uefi/tcg time to ready: ${j.seconds} s`);
  });

  it("a copy resized to 4 GiB boots with BIOS, grows / to the disk, and passes the example's checks", () => {
    // Beside a copy of the manifest, so `kiln test IMAGE` runs the example's checks plus one more.
    const dir = join(OUT, "grown");
    mkdirSync(dir);
    const image = join(dir, "grown.qcow2");
    execFileSync("cp", ["--sparse=always", join(DIR, "minimal.qcow2"), image]);
    execFileSync("qemu-img", ["resize", "-q", image, "4G"]);
    const m = JSON.parse(readFileSync(join(DIR, "manifest.json"), "utf8"));
    m.tests.push({
      name: "/ over 3.5 GiB",
      run: "test $(stat -f -c %b /) -gt $(( 3584 * 1024 * 1024 / $(stat -f -c %S /) ))",
    });
    // Work the build did is not done again at boot, and idle generators are not run.
    m.tests.push({
      name: "sysusers skipped, generators masked",
      run: 'systemctl show -P ConditionResult systemd-sysusers.service | grep -qx no && test "$(readlink /etc/systemd/system-generators/systemd-sysv-generator)" = /dev/null && systemctl is-active systemd-modules-load.service | grep -qx inactive',
    });
    writeFileSync(join(dir, "manifest.json"), JSON.stringify(m));
    const r = kiln(["test", image, "--on", "bios", "--accel", "tcg", "--json", "--timeout", "240"]);
    const t = JSON.parse(r.stdout || "{}").targets?.[0];
    expect(t?.ready, `${r.stderr}\n${t?.bootError ?? ""}`).toBe(true);
    const failed = t.results.filter((c: { passed: boolean }) => !c.passed);
    expect(failed, JSON.stringify(failed)).toEqual([]);
    expect(t.results.map((c: { name: string }) => c.name)).toEqual(
      expect.arrayContaining([
        "security suite in the apt sources",
        "kernel is the newest the suites offered, from -security or -updates",
        "admin may sudo",
        "system bus",
        "hostnamectl over the bus",
        "disk filled by its last partition and filesystem",
        "/ over 3.5 GiB",
        "sysusers skipped, generators masked",
      ]),
    );
    expect(t.results).toHaveLength(m.tests.length);
    console.log(`bios/tcg (resized) time to ready: ${t.readySeconds} s`);
  });

  it("sudo kiln build hands every output to SUDO_UID/SUDO_GID; a rebuild says how old its root is", () => {
    const out = join(OUT, "owned/deep/minimal");
    const r = spawnSync(process.execPath, [KILN, "build", "examples/minimal.yaml", "-o", out], {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 900_000,
      env: { ...process.env, SUDO_UID: "12345", SUDO_GID: "12346" },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/root filesystem .*cached, \d+ (min|h|d) old/);
    const owners: string[] = [];
    const walk = (p: string) => {
      const st = lstatSync(p);
      owners.push(`${p.slice(OUT.length)} ${st.uid}:${st.gid}`);
      if (st.isDirectory() && !p.endsWith(".rootfs"))
        for (const e of readdirSync(p)) walk(join(p, e));
    };
    walk(join(OUT, "owned"));
    expect(owners.filter((o) => !o.includes(".rootfs") && !o.endsWith(" 12345:12346"))).toEqual([]);
    expect(owners.join("\n")).toContain("/owned/deep/minimal/credentials 12345:12346");
    expect(owners.join("\n")).toContain("/owned/deep/minimal/minimal.qcow2 12345:12346");
    // ...but the root filesystem tree keeps its owners: they are the system's.
    expect(owners.join("\n")).toContain("/owned/deep/minimal/minimal.rootfs 0:0");
    expect(statSync(join(out, "minimal.rootfs/etc/shadow")).uid).toBe(0);
    rmSync(join(OUT, "owned"), { recursive: true, force: true });
  });
});

describe("failure leaves nothing behind", () => {
  it("a spec error fails with file:line:col and exit 1, building nothing", () => {
    const bad = join(OUT, "bad.yaml");
    writeFileSync(bad, "name: bad\npakages: [curl]\n");
    const r = kiln(["build", bad, "--output", join(OUT, "bad")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `${bad}:2:1: error: unknown key \`pakages\` (did you mean \`packages\`?)`,
    );
    expect(existsSync(join(OUT, "bad"))).toBe(false);
  });

  it("a failing build keeps the previous output intact and leaves no work directory", () => {
    const before = readFileSync(join(DIR, "manifest.json"), "utf8");
    const spec = join(OUT, "limit.yaml");
    writeFileSync(
      spec,
      `extends: ${join(ROOT, "examples/minimal.yaml")}\nname: minimal\nlimits: { installed_size: 10M }\n`,
    );
    const r = kiln(["build", spec, "--output", DIR]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/installed size .* exceeds limits.installed_size 10M/);
    expect(r.stderr).toContain("largest:");
    expect(readFileSync(join(DIR, "manifest.json"), "utf8")).toBe(before);
    expect(readdirSync(OUT).filter((f) => f.includes("kiln-work"))).toEqual([]);
  });
});
