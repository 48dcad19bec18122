import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { verify } from "unixcrypt";
import { describe, expect, it } from "vitest";
import { handOver, sudoOwner } from "../../src/builder/ownership.js";
import { StepCache } from "../../src/builder/step-cache.js";
import { addedPaths, parseEnvFile } from "../../src/builder/steps/addons.js";
import { dropEmptyModulesList, idleGenerators } from "../../src/builder/steps/boot-work.js";
import { growFiles } from "../../src/builder/steps/grow.js";
import { parseMadison } from "../../src/builder/steps/kernel.js";
import { initrdModules } from "../../src/builder/steps/modules.js";
import { loadSpec } from "../../src/config/load.js";
import { specSchema } from "../../src/config/schema.js";
import { addonNameVersion } from "../../src/deliver/addons.js";
import { mirrorArgs } from "../../src/distro/mmdebstrap.js";
import { parseReleaseHead } from "../../src/distro/release.js";
import { age } from "../../src/distro/rootfs-cache.js";
import { planBuild } from "../../src/plan/plan.js";
import { inertGroups, rootfsRecipe } from "../../src/plan/recipe.js";
import { networkdUnits } from "../../src/render/networkd.js";
import { generatePassword, hashPassword } from "../../src/util/credentials.js";

const example = join(import.meta.dirname, "../../examples/minimal.yaml");

describe("passwords", () => {
  it("SHA-512 crypt matches openssl passwd -6 with the same salt", () => {
    for (const [pw, salt] of [
      ["correct horse", "abcdefgh"],
      [generatePassword(), "Zx./09saltsalt12"],
    ] as const) {
      const openssl = execFileSync("openssl", ["passwd", "-6", "-salt", salt, "-stdin"], {
        input: pw,
      })
        .toString()
        .trim();
      expect(hashPassword(pw, salt)).toBe(openssl);
    }
  });

  it("generates different passwords each time, and the hash never contains the plaintext", () => {
    const a = generatePassword();
    expect(a).toMatch(/^[A-Za-z2-9]{20}$/);
    expect(generatePassword()).not.toBe(a);
    const h = hashPassword(a);
    expect(h.startsWith("$6$")).toBe(true);
    expect(h).not.toContain(a);
    expect(verify(a, h)).toBe(true);
  });
});

describe("plan", () => {
  it("orders steps and keys the root filesystem by its recipe only", () => {
    const { spec, canonical } = loadSpec(example);
    const p = planBuild(spec, canonical);
    expect(p.steps.map((s) => s.id)).toEqual([
      "rootfs",
      "configure",
      "users",
      "kernel",
      "minimize",
      "disk",
      "qcow2",
      // Last: it moves the root filesystem into the output.
      "directory",
      "manifest",
    ]);
    const again = planBuild(spec, canonical);
    expect(again.steps.map((s) => s.key)).toEqual(p.steps.map((s) => s.key));
    // A different host name does not invalidate the cached root filesystem...
    const renamed = planBuild({ ...spec, hostname: "other" }, `${canonical}x`);
    expect(renamed.steps[0]!.key).toBe(p.steps[0]!.key);
    expect(renamed.specHash).not.toBe(p.specHash);
    // ...but another package does.
    const more = planBuild({ ...spec, packages: [...spec.packages, "curl"] }, canonical);
    expect(more.steps[0]!.key).not.toBe(p.steps[0]!.key);
  });

  it("gives a spec whose only output is oci no kernel, and the same root as kiln pull", () => {
    const spec = specSchema.parse({ name: "c", outputs: ["oci"] });
    const p = planBuild(spec, "{}");
    expect(p.steps.map((s) => s.id)).toEqual([
      "rootfs",
      "configure",
      "users",
      "minimize",
      "oci",
      "manifest",
    ]);
    expect(p.recipe.packages).toEqual(["systemd-sysv"]);
    expect(
      planBuild(specSchema.parse({ name: "c", outputs: ["oci", "tar"] }), "{}").recipe.packages,
    ).toContain("linux-image-cloud-amd64");
  });

  it("cloud outputs: the disk first, cloud-init in the root, the clouds' disk drivers in the initrd", () => {
    const spec = specSchema.parse({ name: "c", outputs: ["aws", "gce"] });
    const ids = planBuild(spec, "{}").steps.map((s) => s.id);
    expect(ids.indexOf("disk")).toBeGreaterThan(-1);
    expect(ids.indexOf("gce")).toBeGreaterThan(ids.indexOf("disk"));
    expect(ids.indexOf("aws")).toBeGreaterThan(ids.indexOf("gce"));
    expect(rootfsRecipe(spec).packages).toContain("cloud-init");
    expect(rootfsRecipe(specSchema.parse({ name: "c" })).packages).not.toContain("cloud-init");
    expect(initrdModules(spec)).toEqual([
      "virtio_pci",
      "virtio_blk",
      "virtio_scsi",
      "sd_mod",
      "ahci",
      "nvme",
      "xen_blkfront",
    ]);
  });

  it("makes the disk when only qcow2 is asked for", () => {
    const spec = specSchema.parse({ name: "q", outputs: ["qcow2"] });
    expect(planBuild(spec, "{}").steps.map((s) => s.id)).toContain("disk");
  });
});

describe("distribution recipes", () => {
  it("debian: cloud kernel, tiny initrd, minimal path filters", () => {
    const r = rootfsRecipe(specSchema.parse({ name: "d" }));
    expect(r.mirror).toBe("http://deb.debian.org/debian");
    expect(r.packages).toContain("linux-image-cloud-amd64");
    expect(r.packages).toContain("tiny-initramfs");
    expect(r.args).toContain("--dpkgopt=path-exclude=/usr/share/man/*");
    expect(r.args.some((a) => a.startsWith("--keyring"))).toBe(false);
  });

  it("ubuntu: its own mirror, keyring, components and kernel", () => {
    const r = rootfsRecipe(
      specSchema.parse({
        name: "u",
        distribution: { id: "ubuntu", release: "noble" },
        kernel: { initrd: "initramfs-tools" },
      }),
    );
    expect(r.mirror).toBe("http://archive.ubuntu.com/ubuntu");
    expect(r.release).toBe("noble");
    expect(r.components).toEqual(["main", "universe"]);
    expect(r.args).toContain("--keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg");
    expect(mirrorArgs(r)).toEqual([
      "deb http://archive.ubuntu.com/ubuntu noble main universe",
      "deb http://archive.ubuntu.com/ubuntu noble-updates main universe",
      "deb http://security.ubuntu.com/ubuntu noble-security main universe",
    ]);
    // Ubuntu's own images run dbus-daemon, in main on every release.
    expect(r.packages).toContain("dbus");
    expect(r.packages).toContain("linux-image-virtual");
    expect(r.packages).toContain("initramfs-tools");
    const arm = rootfsRecipe(
      specSchema.parse({
        name: "u",
        architecture: "arm64",
        distribution: { id: "ubuntu", release: "noble" },
      }),
    );
    expect(arm.mirror).toBe("http://ports.ubuntu.com/ubuntu-ports");
    expect(mirrorArgs(arm)[2]).toBe(
      "deb http://ports.ubuntu.com/ubuntu-ports noble-security main universe",
    );
  });

  it("debian: builds from and keeps the release's -updates and -security suites", () => {
    const r = rootfsRecipe(specSchema.parse({ name: "d" }));
    expect(mirrorArgs(r)).toEqual([
      "deb http://deb.debian.org/debian bookworm main",
      "deb http://deb.debian.org/debian bookworm-updates main",
      "deb http://deb.debian.org/debian-security bookworm-security main",
    ]);
    const trixie = rootfsRecipe(
      specSchema.parse({
        name: "t",
        distribution: { release: "trixie", mirror: "http://mirror.example/debian" },
      }),
    );
    expect(mirrorArgs(trixie)).toEqual([
      "deb http://mirror.example/debian trixie main",
      "deb http://mirror.example/debian trixie-updates main",
      "deb http://deb.debian.org/debian-security trixie-security main",
    ]);
    // A spec can say otherwise.
    const own = rootfsRecipe(
      specSchema.parse({
        name: "o",
        distribution: { updates: false, security_mirror: "http://sec.example/debian-security" },
      }),
    );
    expect(mirrorArgs(own)).toEqual([
      "deb http://deb.debian.org/debian bookworm main",
      "deb http://sec.example/debian-security bookworm-security main",
    ]);
    const none = rootfsRecipe(
      specSchema.parse({ name: "n", distribution: { updates: false, security: false } }),
    );
    expect(none.sources.map((x) => x.suite)).toEqual(["bookworm"]);
    // sid has neither suite.
    const sid = rootfsRecipe(specSchema.parse({ name: "s", distribution: { release: "sid" } }));
    expect(sid.sources.map((x) => x.suite)).toEqual(["sid"]);
  });

  it("a bus unless the spec opts out; sudo for group sudo; a warning for wheel", () => {
    const plain = rootfsRecipe(specSchema.parse({ name: "p" }));
    expect(plain.packages).toContain("dbus-broker");
    expect(plain.packages).not.toContain("sudo");
    expect(rootfsRecipe(specSchema.parse({ name: "p", dbus: false })).packages).not.toContain(
      "dbus-broker",
    );
    // A container's host has the bus.
    expect(rootfsRecipe(specSchema.parse({ name: "c" }), { container: true }).packages).toEqual([
      "systemd-sysv",
    ]);
    const admin = specSchema.parse({
      name: "a",
      users: [{ name: "admin", groups: ["sudo", "adm"] }],
    });
    expect(rootfsRecipe(admin).packages).toContain("sudo");
    expect(inertGroups(admin)).toEqual([]);
    const wheel = specSchema.parse({ name: "w", users: [{ name: "w", groups: ["wheel"] }] });
    expect(inertGroups(wheel)).toEqual([
      "group wheel: Debian's sudo grants group sudo; wheel means nothing here",
    ]);
    // The minimal example gets both.
    const { spec } = loadSpec(example);
    expect(rootfsRecipe(spec).packages).toEqual(expect.arrayContaining(["sudo", "dbus-broker"]));
  });

  it("reads a suite's Release Date and refuses a file for another suite", () => {
    const head =
      "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nLabel: Debian-Security\nSuite: oldstable-security\nVersion: 12\nCodename: bookworm-security\nDate: Mon, 30 Nov 2026 00:22:33 UTC\nValid-Until: Mon, 07 Dec 2026 00:22:33 UTC\n";
    expect(parseReleaseHead(head, "bookworm-security")).toBe("2026-11-30T00:22:33.000Z");
    expect(() => parseReleaseHead(head, "trixie-security")).toThrow(
      /Release file is for oldstable-security\/bookworm-security, not trixie-security/,
    );
    expect(() => parseReleaseHead("Suite: bookworm\nDate: yesterday-ish\n", "bookworm")).toThrow(
      /no valid Date/,
    );
    expect(() => parseReleaseHead("<html>nope</html>", "bookworm")).toThrow(/no suite/);
  });

  it("says how old a cached root is", () => {
    const now = Date.parse("2026-12-02T12:00:00Z");
    expect(age("2026-12-02T11:30:00Z", now)).toBe("30 min");
    expect(age("2026-12-02T02:00:00Z", now)).toBe("10 h");
    expect(age("2026-11-25T12:00:00Z", now)).toBe("7 d");
  });

  it("reads what the suites offered for the kernel", () => {
    const text = [
      "linux-image-cloud-amd64 | 6.1.158-1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages",
      "linux-image-cloud-amd64 | 6.1.153-1 | http://deb.debian.org/debian bookworm/main amd64 Packages",
      "garbage line",
      "",
    ].join("\n");
    expect(parseMadison(text, "linux-image-cloud-amd64")).toEqual([
      { version: "6.1.158-1", suite: "bookworm-security" },
      { version: "6.1.153-1", suite: "bookworm" },
    ]);
  });

  it("the profile standard keeps docs", () => {
    const r = rootfsRecipe(specSchema.parse({ name: "s", profile: "standard" }));
    expect(r.args.some((a) => a.includes("path-exclude"))).toBe(false);
  });
});

describe("network", () => {
  it("DHCP by default, static when an address is given", () => {
    const spec = specSchema.parse({
      name: "n",
      network: {
        interfaces: [
          { match: "eth0", address: "10.0.0.2/24", gateway: "10.0.0.1", dns: ["10.0.0.53"] },
          {},
        ],
      },
    });
    const units = networkdUnits(spec.network.interfaces);
    expect(units[0]).toEqual([
      "10-kiln.network",
      "[Match]\nName=eth0\n\n[Network]\nAddress=10.0.0.2/24\nGateway=10.0.0.1\nDNS=10.0.0.53\n",
    ]);
    expect(units[1]![1]).toContain("Name=en* eth*\n\n[Network]\nDHCP=yes\n");
  });
});

describe("add-ons", () => {
  it("a sysext takes only what is new or changed under /usr and /opt, with its parents", () => {
    const t = mkdtempSync(join(tmpdir(), "kiln-unit-addons-"));
    try {
      const root = join(t, "root");
      const base = join(t, "base");
      for (const r of [root, base]) {
        mkdirSync(join(r, "usr/bin"), { recursive: true });
        mkdirSync(join(r, "etc"), { recursive: true });
        writeFileSync(join(r, "usr/bin/same"), "same\n");
        writeFileSync(join(r, "etc/hostname"), `${r}\n`);
      }
      utimesSync(join(base, "usr/bin/same"), 1, 1);
      writeFileSync(join(root, "usr/bin/changed"), "new\n");
      writeFileSync(join(base, "usr/bin/changed"), "old\n");
      mkdirSync(join(root, "usr/lib/x86_64-linux-gnu"), { recursive: true });
      writeFileSync(join(root, "usr/lib/x86_64-linux-gnu/libnew.so"), "lib");
      expect(addedPaths(root, base, ["usr", "opt"])).toEqual([
        "usr",
        "usr/bin",
        "usr/bin/changed",
        "usr/lib",
        "usr/lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu/libnew.so",
      ]);
      expect(addedPaths(root, undefined, ["usr"])).toContain("usr/bin/same");
    } finally {
      rmSync(t, { recursive: true, force: true });
    }
  });

  it("reads os-release files and NAME_VERSION.raw names", () => {
    expect(parseEnvFile('ID=debian\nVERSION_ID="12"\n# c\n')).toEqual({
      ID: "debian",
      VERSION_ID: "12",
    });
    expect(addonNameVersion("/srv/web-app_1.2.3.raw")).toEqual({
      name: "web-app",
      version: "1.2.3",
    });
  });
});

describe("growing to the disk", () => {
  it("single layout: the root partition and its filesystem; A/B: only the data partition", () => {
    const single = growFiles(specSchema.parse({ name: "s" }));
    expect(single["usr/lib/repart.d/50-root.conf"]).toContain("[Partition]\nType=root\n");
    expect(single["etc/systemd/system/kiln-growfs-root.service"]).toContain(
      "ExecStart=/usr/lib/systemd/systemd-growfs /",
    );
    // Network-boot and live systems (no root= on the command line) are left alone.
    expect(single["etc/systemd/system/systemd-repart.service.d/kiln.conf"]).toContain(
      "ConditionKernelCommandLine=root",
    );
    const ab = growFiles(specSchema.parse({ name: "a", disk: { layout: "ab" } }));
    expect(Object.keys(ab).sort()).toEqual([
      "etc/systemd/system/systemd-repart.service.d/kiln.conf",
      "usr/lib/repart.d/10-root-a.conf",
      "usr/lib/repart.d/11-root-b.conf",
      "usr/lib/repart.d/20-data.conf",
    ]);
    expect(ab["usr/lib/repart.d/10-root-a.conf"]).toContain("Type=root\nWeight=0\n");
    expect(ab["usr/lib/repart.d/20-data.conf"]).toContain("Type=linux-generic\n");
  });
});

describe("outputs for the user behind sudo", () => {
  it("reads SUDO_UID/SUDO_GID and refuses what is not an id", () => {
    if (process.getuid?.() !== 0) throw new Error("this test runs as root, as kiln's CI does");
    expect(sudoOwner({})).toBeUndefined();
    expect(sudoOwner({ SUDO_UID: "12345", SUDO_GID: "23456" })).toEqual({ uid: 12345, gid: 23456 });
    expect(sudoOwner({ SUDO_UID: "0", SUDO_GID: "0" })).toBeUndefined();
    expect(() => sudoOwner({ SUDO_UID: "1000; rm", SUDO_GID: "1" })).toThrow(
      /not a user or group id/,
    );
  });

  it("hands every output but a root filesystem tree to the user", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kiln-own-"));
    try {
      const out = join(dir, "a/b/out");
      mkdirSync(join(out, "x.rootfs/etc"), { recursive: true });
      mkdirSync(join(out, "x.netboot"), { recursive: true });
      writeFileSync(join(out, "credentials"), "admin:pw\n");
      writeFileSync(join(out, "x.netboot/vmlinuz"), "");
      writeFileSync(join(out, "x.rootfs/etc/shadow"), "");
      await handOver(
        out,
        { uid: 12345, gid: 12346 },
        {
          keep: ["x.rootfs"],
          madeParents: [join(dir, "a/b"), join(dir, "a")],
        },
      );
      const owner = (p: string) => {
        const st = statSync(join(dir, p));
        return [st.uid, st.gid];
      };
      for (const p of ["a", "a/b", "a/b/out", "a/b/out/credentials", "a/b/out/x.netboot/vmlinuz"])
        expect(owner(p), p).toEqual([12345, 12346]);
      expect(owner("a/b/out/x.rootfs")).toEqual([0, 0]);
      expect(owner("a/b/out/x.rootfs/etc/shadow")).toEqual([0, 0]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("boot work ruled out at build time", () => {
  const fakeRoot = () => {
    const root = mkdtempSync(join(tmpdir(), "kiln-bootwork-"));
    const gens = join(root, "usr/lib/systemd/system-generators");
    mkdirSync(gens, { recursive: true });
    for (const g of [
      "systemd-sysv-generator",
      "systemd-rc-local-generator",
      "systemd-cryptsetup-generator",
      "systemd-hibernate-resume-generator",
      "systemd-fstab-generator",
      "systemd-getty-generator",
    ])
      writeFileSync(join(gens, g), "");
    mkdirSync(join(root, "etc/init.d"), { recursive: true });
    mkdirSync(join(root, "usr/lib/systemd/system"), { recursive: true });
    writeFileSync(join(root, "etc/init.d/ssh"), "");
    writeFileSync(join(root, "usr/lib/systemd/system/ssh.service"), "");
    // A mask counts as a native unit: hwclock.sh has one, a link to /dev/null.
    writeFileSync(join(root, "etc/init.d/hwclock.sh"), "");
    symlinkSync("/dev/null", join(root, "usr/lib/systemd/system/hwclock.service"));
    return root;
  };
  it("masks only generators with nothing to read, never fstab's or getty's", () => {
    const root = fakeRoot();
    try {
      expect(idleGenerators(root, "")).toEqual([
        "systemd-cryptsetup-generator",
        "systemd-hibernate-resume-generator",
        "systemd-rc-local-generator",
        "systemd-sysv-generator",
      ]);
      // What the image or its command line has keeps its generator.
      writeFileSync(join(root, "etc/rc.local"), "#!/bin/sh\n");
      writeFileSync(join(root, "etc/init.d/legacyd"), "");
      expect(idleGenerators(root, "resume=/dev/vda4 rd.luks.uuid=x")).toEqual([]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
  it("drops Debian's modules.conf link only while /etc/modules names nothing", async () => {
    const root = fakeRoot();
    try {
      mkdirSync(join(root, "etc/modules-load.d"));
      const link = join(root, "etc/modules-load.d/modules.conf");
      symlinkSync("../modules", link);
      writeFileSync(join(root, "etc/modules"), "# /etc/modules\nbr_netfilter # bridges\n");
      expect(await dropEmptyModulesList(root)).toBe(false);
      expect(existsSync(join(root, "etc/modules"))).toBe(true);
      writeFileSync(
        join(root, "etc/modules"),
        "# /etc/modules: kernel modules to load at boot\n\n",
      );
      expect(await dropEmptyModulesList(root)).toBe(true);
      expect(() => statSync(link)).toThrow();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe("step cache", () => {
  it("restores what was saved under a key, dated as asked, and keeps only the newest", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kiln-stepcache-"));
    const before = process.env.KILN_CACHE;
    process.env.KILN_CACHE = join(dir, "cache");
    try {
      const cache = new StepCache("thing", 2);
      const dest = join(dir, "out");
      expect(await cache.restore("k1", dest)).toBe(false);
      for (const k of ["k1", "k2", "k3"]) {
        writeFileSync(join(dir, "src"), `made for ${k}`);
        await cache.save(k, join(dir, "src"));
        // Distinct times, so which is newest is not left to the clock's resolution.
        const t = { k1: 1000, k2: 2000, k3: 3000 }[k]!;
        utimesSync(join(dir, "cache/thing", k), t, t);
      }
      expect(await cache.restore("k1", dest)).toBe(false);
      expect(await cache.restore("k2", dest, 1_700_000_000)).toBe(true);
      expect(readFileSync(dest, "utf8")).toBe("made for k2");
      expect(statSync(dest).mtimeMs).toBe(1_700_000_000_000);
    } finally {
      if (before === undefined) delete process.env.KILN_CACHE;
      else process.env.KILN_CACHE = before;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
