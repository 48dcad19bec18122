import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { verify } from "unixcrypt";
import { describe, expect, it } from "vitest";
import { addedPaths, parseEnvFile } from "../../src/build/steps/addons.js";
import { addonNameVersion } from "../../src/deliver/addons.js";
import { rootfsRecipe } from "../../src/distro/mmdebstrap.js";
import { planBuild } from "../../src/plan/plan.js";
import { networkdUnits } from "../../src/render/networkd.js";
import { loadSpec } from "../../src/spec/load.js";
import { specSchema } from "../../src/spec/schema.js";
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
    expect(r.args).toContain("--components=main,universe");
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
