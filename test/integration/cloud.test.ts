import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validateCloudConfig } from "../../src/seed/validate.js";
import { ROOT, kiln as run } from "./helpers.js";

// Issue 8 for real: a disk kiln did not customise (built earlier, standing in
// for a vendor cloud image) is served with a SHA512SUMS file over loopback
// HTTP, imported (wrong sum refused, right sum stored), customised by a spec
// and booted under QEMU (TCG) with a NoCloud seed ISO; checks inside the
// guest see both the seed and the customisation.
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-cloud-"));
const STORE = join(OUT, "store");
const MIRROR = join(OUT, "mirror");

const kiln = (args: string[]) => run(args, { env: { KILN_STORE: STORE } });

const sha512 = (f: string) => createHash("sha512").update(readFileSync(f)).digest("hex");
// The mirror runs in a process of its own: kiln runs under spawnSync, which
// would block a server in this one.
let http: ChildProcess | undefined;
let url: string;

beforeAll(async () => {
  const b = kiln(["build", "test/integration/specs/vendor.yaml", "-o", join(OUT, "vendor")]);
  expect(b.code, b.stderr).toBe(0);
  mkdirSync(MIRROR);
  copyFileSync(join(OUT, "vendor/vendor.qcow2"), join(MIRROR, "vendor.qcow2"));
  writeFileSync(
    join(MIRROR, "SHA512SUMS"),
    `${"0".repeat(128)}  other.qcow2\n${sha512(join(MIRROR, "vendor.qcow2"))}  vendor.qcow2\n`,
  );
  http = spawn(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `const { serveDirectory } = await import(${JSON.stringify(join(ROOT, "dist/util/http-dir.js"))});
       const s = await serveDirectory(${JSON.stringify(MIRROR)});
       console.log(s.port);`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const port = await new Promise<string>((res) =>
    http!.stdout!.once("data", (b) => res(String(b).trim())),
  );
  url = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  http?.kill();
  rmSync(OUT, { recursive: true, force: true });
});

const stored = () =>
  existsSync(join(STORE, "disks"))
    ? readdirSync(join(STORE, "disks")).filter((n) => n !== ".downloads")
    : [];

describe("kiln import", () => {
  it("refuses a wrong sum with both sums, deletes the download, stores nothing", () => {
    const wrong = "ab".repeat(64);
    const r = kiln(["import", `${url}/vendor.qcow2`, "--sha512", wrong, "--name", "vendor-it"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`expected sha512 ${wrong}`);
    expect(r.stderr).toContain(`got      sha512 ${sha512(join(MIRROR, "vendor.qcow2"))}`);
    expect(stored()).toEqual([]);
    expect(readdirSync(join(STORE, "disks/.downloads"))).toEqual([]);
    expect(kiln(["disks", "--json"]).stdout.trim()).toBe("[]");
  });

  it("continues a partial download, verifies against SHA512SUMS and stores image:vendor-it", () => {
    const full = readFileSync(join(MIRROR, "vendor.qcow2"));
    const part = join(STORE, "disks/.downloads");
    const dl = kiln([
      "import",
      `${url}/vendor.qcow2`,
      "--checksums",
      `${url}/SHA512SUMS`,
      "--name",
      "vendor-it",
      "--json",
    ]);
    expect(dl.code, dl.stderr).toBe(0);
    const rec = JSON.parse(dl.stdout);
    expect(rec.verified).toBe(`sha512:${sha512(join(MIRROR, "vendor.qcow2"))}`);
    expect(rec.format).toBe("qcow2");
    expect(rec.root).toBeGreaterThan(0);
    expect(statSync(rec.path).size).toBe(rec.virtualSize);

    // Half a download, as an interrupted try leaves it (named by the URL's cache key).
    const key = createHash("sha256")
      .update(JSON.stringify([`${url}/vendor.qcow2`]))
      .digest("hex")
      .slice(0, 16);
    writeFileSync(
      join(part, `${key}-vendor.qcow2.part`),
      full.subarray(0, Math.floor(full.length / 2)),
    );
    const again = kiln([
      "import",
      `${url}/vendor.qcow2`,
      "--checksums",
      `${url}/SHA512SUMS`,
      "--name",
      "vendor-it",
      "--force",
    ]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/continued from/);
    expect(again.stdout).toMatch(/imported vendor-it: .* sha512 verified/);
    expect(stored()).toEqual(["vendor-it"]);
    expect(readdirSync(part)).toEqual([]);
  });

  it("a file not in the checksum list, or a name taken, is refused", () => {
    const r = kiln([
      "import",
      join(MIRROR, "vendor.qcow2"),
      "--checksums",
      join(MIRROR, "SHA512SUMS"),
      "--name",
      "x",
    ]);
    expect(r.code).toBe(0);
    copyFileSync(join(MIRROR, "vendor.qcow2"), join(OUT, "unlisted.qcow2"));
    const u = kiln([
      "import",
      join(OUT, "unlisted.qcow2"),
      "--checksums",
      join(MIRROR, "SHA512SUMS"),
    ]);
    expect(u.code).toBe(1);
    expect(u.stderr).toContain("lists no checksum for unlisted.qcow2");
    const t = kiln(["import", join(MIRROR, "vendor.qcow2"), "--name", "x"]);
    expect(t.code).toBe(1);
    expect(t.stderr).toContain("already imported");
    expect(kiln(["disks", "rm", "x"]).code).toBe(0);
  });
});

describe("customise and seed", () => {
  it("customises a copy (package, file, user, grown disk), the import stays as it was", () => {
    const before = sha512(join(STORE, "disks/vendor-it/disk.raw"));
    const r = kiln([
      "build",
      "test/integration/specs/custom.yaml",
      "-o",
      join(OUT, "custom"),
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.manifest.artifacts.map((a: { format: string }) => a.format)).toEqual([
      "disk",
      "qcow2",
      "vmdk",
      "vdi",
      "vhdx",
    ]);
    expect(j.manifest.packages.map((p: { name: string }) => p.name)).toContain("jq");
    expect(statSync(join(OUT, "custom/custom.raw")).size).toBe(2 * 1024 ** 3);
    expect(statSync(join(OUT, "custom/credentials")).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(OUT, "custom/credentials"), "utf8")).toMatch(/^alice:\S{20}\n$/);
    expect(sha512(join(STORE, "disks/vendor-it/disk.raw"))).toBe(before);
  });

  it("kiln seed: a cidata ISO, passwords only in the 0600 credentials file", () => {
    const r = kiln([
      "seed",
      "test/integration/specs/custom.yaml",
      "--format",
      "nocloud-iso",
      "-o",
      join(OUT, "seed"),
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).files).toEqual(["seed.iso", "credentials"]);
    const bob = /^bob:(\S+)$/m.exec(readFileSync(join(OUT, "seed/credentials"), "utf8"))![1]!;
    const iso = readFileSync(join(OUT, "seed/seed.iso"));
    expect(iso.includes(Buffer.from("cidata"))).toBe(true);
    expect(iso.includes(Buffer.from(bob))).toBe(false);
    expect(iso.includes(Buffer.from("$6$"))).toBe(true);
  });

  it("boots under QEMU with the seed: cloud-init applied it and the customisation is there", () => {
    const r = kiln([
      "test",
      join(OUT, "custom"),
      "--on",
      "bios",
      "--accel",
      "tcg",
      "--seed",
      join(OUT, "seed/seed.iso"),
      "--timeout",
      "400",
      "--json",
    ]);
    const j = JSON.parse(r.stdout || "{}");
    const results = j.targets?.[0]?.results ?? [];
    expect(
      results.map((c: { name: string; passed: boolean; actual: string }) => [
        c.name,
        c.passed,
        c.passed ? "" : c.actual,
      ]),
      `${r.stderr}\n${j.targets?.[0]?.bootError ?? ""}`,
    ).toEqual([
      ["cloud-init done", true, ""],
      ["seed hostname", true, ""],
      ["seed user", true, ""],
      ["seed runcmd", true, ""],
      ["customised package", true, ""],
      ["customised file", true, ""],
      ["customised user", true, ""],
      ["root grown", true, ""],
    ]);
    expect(r.code).toBe(0);
  });
});

describe("seed validation with cloud-init's own schema check", () => {
  it("accepts the golden NoCloud and autoinstall user-data; rejects a broken one in cloud-init's words", async () => {
    const golden = join(ROOT, "test/unit/golden");
    expect(await validateCloudConfig(join(golden, "nocloud/user-data"))).toEqual([]);
    expect(await validateCloudConfig(join(golden, "autoinstall/user-data"))).toEqual([]);
    const bad = join(OUT, "bad-user-data");
    writeFileSync(bad, "#cloud-config\nhostname: 5\nruncmd: 7\nautoinstall:\n  identity: {}\n");
    const errors = await validateCloudConfig(bad);
    expect(errors).toEqual(
      expect.arrayContaining([
        "hostname: 5 is not of type 'string'",
        "runcmd: 7 is not of type 'array'",
        "autoinstall: 'version' is a required property",
      ]),
    );
  });
});

describe("exports for other hypervisors", () => {
  it("vmdk, vdi and vhdx pass qemu-img check and compare equal to the raw disk", () => {
    const raw = join(OUT, "custom/custom.raw");
    for (const [f, fmt] of [
      ["custom.qcow2", "qcow2"],
      ["custom.vmdk", "vmdk"],
      ["custom.vdi", "vdi"],
      ["custom.vhdx", "vhdx"],
    ] as const) {
      const file = join(OUT, "custom", f);
      const info = JSON.parse(
        spawnSync("qemu-img", ["info", "--output=json", file], { encoding: "utf8" }).stdout,
      );
      expect(info.format).toBe(fmt);
      expect(info["virtual-size"]).toBe(statSync(raw).size);
      const check = spawnSync("qemu-img", ["check", file], { encoding: "utf8" });
      expect(check.status, check.stdout + check.stderr).toBe(0);
      const cmp = spawnSync("qemu-img", ["compare", "-f", "raw", "-F", fmt, raw, file], {
        encoding: "utf8",
      });
      expect(cmp.status, cmp.stdout + cmp.stderr).toBe(0);
      expect(cmp.stdout).toContain("Images are identical");
    }
  });

  it("kiln vm --print-libvirt writes a domain libvirt's own schema accepts", () => {
    for (const [image, fw, type] of [
      ["custom.qcow2", "uefi", "qcow2"],
      ["custom.vmdk", "bios", "vmdk"],
    ] as const) {
      const r = kiln([
        "vm",
        "--print-libvirt",
        join(OUT, "custom", image),
        "--firmware",
        fw,
        "--memory",
        "2048",
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`<driver name='qemu' type='${type}'/>`);
      expect(r.stdout).toContain(`<source file='${join(OUT, "custom", image)}'/>`);
      expect(r.stdout).toContain("<memory unit='MiB'>2048</memory>");
      expect(r.stdout.includes("<os firmware='efi'>")).toBe(fw === "uefi");
      const xml = join(OUT, `domain-${fw}.xml`);
      writeFileSync(xml, r.stdout);
      const v = spawnSync("virt-xml-validate", [xml, "domain"], { encoding: "utf8" });
      expect(v.status, v.stdout + v.stderr).toBe(0);
    }
  });
});

describe("public clouds", () => {
  const C = join(OUT, "clouds");
  // The format named: a fixed VHD is a raw disk with a footer, which qemu-img's probe calls raw.
  const info = (file: string, format: string) =>
    JSON.parse(
      spawnSync("qemu-img", ["info", "-f", format, "--output=json", file], { encoding: "utf8" })
        .stdout,
    );
  const MiB = 1024 * 1024;

  it("builds gce, azure and aws images in the formats their imports take", () => {
    const b = kiln(["build", "test/integration/specs/clouds.yaml", "-o", C]);
    expect(b.code, b.stderr).toBe(0);
    // Compute Engine: one disk.raw, a whole number of GiB, in a gzipped oldgnu tar.
    const gce = join(C, "clouds.gce.tar.gz");
    const list = spawnSync("tar", ["-tvzf", gce], { encoding: "utf8" }).stdout.trim().split("\n");
    expect(list).toHaveLength(1);
    const size = Number(list[0]!.split(/\s+/)[2]);
    expect(list[0]).toMatch(/ disk\.raw$/);
    expect(size % (1024 * MiB)).toBe(0);
    const header = spawnSync("sh", ["-c", 'gzip -dc "$1" | head -c 512', "sh", gce]).stdout;
    expect(header.subarray(257, 265).toString("latin1")).toBe("ustar  \0"); // oldgnu's magic
    // Azure: a fixed VHD (footer disk type 2) of a whole number of MiB, footer after the data.
    const vhd = join(C, "clouds.azure.vhd");
    const v = info(vhd, "vpc");
    expect(v.format).toBe("vpc");
    expect(v["virtual-size"] % MiB).toBe(0);
    expect(statSync(vhd).size).toBe(v["virtual-size"] + 512);
    const footer = Buffer.alloc(512);
    const fd = openSync(vhd, "r");
    readSync(fd, footer, 0, 512, statSync(vhd).size - 512);
    closeSync(fd);
    expect(footer.subarray(0, 8).toString("latin1")).toBe("conectix");
    expect(footer.readUInt32BE(60)).toBe(2);
    // EC2: a stream-optimized VMDK that qemu-img checks clean.
    const vmdk = join(C, "clouds.aws.vmdk");
    const k = info(vmdk, "vmdk");
    expect(k.format).toBe("vmdk");
    expect(k["format-specific"].data["create-type"]).toBe("streamOptimized");
    const check = spawnSync("qemu-img", ["check", vmdk], { encoding: "utf8" });
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it.each([
    ["gce", "clouds.gce.tar.gz"],
    ["azure", "clouds.azure.vhd"],
    ["aws", "clouds.aws.vmdk"],
  ])("the %s image boots in QEMU and passes the spec's checks", (_cloud, file) => {
    const t = kiln(["test", join(C, file), "--on", "bios", "--accel", "tcg", "--json"]);
    const j = JSON.parse(t.stdout || "{}");
    expect(t.code, `${t.stderr}\n${j.targets?.[0]?.bootError ?? ""}`).toBe(0);
    expect(j.targets[0].results.filter((c: { passed: boolean }) => !c.passed)).toEqual([]);
    expect(j.targets[0].results).toHaveLength(4);
  });
});

describe("named VMs", () => {
  const hostnameIn = (disk: string) => {
    const raw = join(OUT, "look.raw");
    spawnSync("qemu-img", ["convert", "-O", "raw", disk, raw]);
    const parts = JSON.parse(spawnSync("sfdisk", ["--json", raw], { encoding: "utf8" }).stdout)
      .partitiontable.partitions as { start: number; type: string }[];
    const root = parts.find((p) => p.type === "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")!;
    const r = spawnSync(
      "debugfs",
      ["-R", "cat /etc/hostname", `${raw}?offset=${root.start * 512}`],
      {
        encoding: "utf8",
      },
    );
    rmSync(raw);
    return r.stdout.trim();
  };

  it("kiln vm --name keeps the overlay and seed between runs; vm rm --purge removes them", () => {
    const boot = (extra: string[]) =>
      kiln([
        "vm",
        ...extra,
        "--name",
        "keep",
        "--firmware",
        "bios",
        "--accel",
        "tcg",
        "--until-ready",
        "--timeout",
        "400",
        "--json",
      ]);
    const first = boot([join(OUT, "custom/custom.qcow2"), "--seed", join(OUT, "seed/seed.iso")]);
    expect(first.code, first.stderr + first.stdout).toBe(0);
    const overlay = join(STORE, "vms/keep/disk.qcow2");
    expect(existsSync(join(STORE, "vms/keep/seed.iso"))).toBe(true);
    // cloud-init's first boot wrote the seed's host name into the overlay, not into the artifact.
    expect(hostnameIn(overlay)).toBe("seeded-host");
    expect(hostnameIn(join(OUT, "custom/custom.qcow2"))).toBe("vendor");
    const ls = JSON.parse(kiln(["vm", "ls", "--json"]).stdout);
    expect(ls.map((v: { name: string; running: boolean }) => [v.name, v.running])).toEqual([
      ["keep", false],
    ]);
    // Again, without image or seed: the kept ones are used.
    const second = boot([]);
    expect(second.code, second.stderr + second.stdout).toBe(0);
    const other = boot([join(OUT, "vendor/vendor.qcow2")]);
    expect(other.code).toBe(1);
    expect(other.stdout + other.stderr).toContain("was made from");
    const refuse = kiln(["vm", "rm", "keep"]);
    expect(refuse.code).toBe(2);
    expect(existsSync(overlay)).toBe(true);
    expect(kiln(["vm", "rm", "keep", "--purge"]).code).toBe(0);
    expect(existsSync(join(STORE, "vms/keep"))).toBe(false);
  });
});
