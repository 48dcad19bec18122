import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { kiln, ROOT, sharedBuild } from "./helpers.js";

// arm64 on this amd64 host, for real: examples/minimal.yaml with
// `architecture: arm64` bootstrapped through qemu-user (binfmt_misc), built
// once for the whole file, booted once under qemu-system-aarch64 (virt,
// AAVMF, TCG) with the spec's checks; and a debian:bookworm arm64 container
// run through qemu-user.
const SPEC = join(ROOT, "test/integration/specs/arm64.yaml");
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-arm64-"));
const STORE = join(OUT, "store");
afterAll(() => rmSync(OUT, { recursive: true, force: true }));

const file = (path: string) => spawnSync("file", ["-b", "-L", path], { encoding: "utf8" }).stdout;

interface Manifest {
  distribution: { architecture: string };
  artifacts: { format: string; path: string }[];
  disk: { partitions: { name: string; offset: number }[] };
}

describe.sequential("arm64 systems", () => {
  let dir = "";
  let manifest: Manifest;
  const artifact = (format: string) =>
    join(dir, manifest.artifacts.find((a) => a.format === format)!.path);

  it("builds examples/minimal.yaml for arm64: arm64 kernel, userland, GRUB and outputs", () => {
    dir = sharedBuild(SPEC);
    manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as Manifest;
    expect(manifest.distribution.architecture).toBe("arm64");
    const root = artifact("directory");
    expect(file(join(root, "vmlinuz"))).toMatch(/ARM64 boot executable/);
    expect(file(join(root, "usr/bin/bash"))).toMatch(/ELF 64-bit LSB .*ARM aarch64/);
    // The ESP holds GRUB for arm64 UEFI at the removable-media path, and nothing for x86.
    const esp = manifest.disk.partitions.find((p) => p.name === "esp")!;
    const img = `${artifact("disk")}@@${esp.offset}`;
    const efi = spawnSync("mdir", ["-b", "-i", img, "::/EFI/BOOT"], { encoding: "utf8" });
    expect(efi.stdout).toMatch(/BOOTAA64\.EFI/);
    expect(efi.stdout).not.toMatch(/BOOTX64/);
    const scratch = mkdtempSync(join(OUT, "esp-"));
    spawnSync("mcopy", ["-i", img, "::/EFI/BOOT/BOOTAA64.EFI", scratch]);
    expect(file(join(scratch, "BOOTAA64.EFI"))).toMatch(/PE32\+ executable.*Aarch64/i);
    // The root partition is typed for arm64 (Discoverable Partitions), which kiln vm reads.
    const sf = JSON.parse(
      spawnSync("sfdisk", ["--json", artifact("disk")], { encoding: "utf8" }).stdout,
    ) as { partitiontable: { partitions: { type: string }[] } };
    expect(sf.partitiontable.partitions.map((p) => p.type)).toContain(
      "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
    );
    // The netboot initrd's busybox is the image's architecture, not the host's.
    const initrd = mkdtempSync(join(OUT, "initrd-"));
    const nb = artifact("netboot");
    expect(file(join(nb, "vmlinuz"))).toMatch(/ARM64 boot executable/);
    const x = spawnSync(
      "sh",
      ["-c", `zstd -dc "${nb}/initrd.img" | (cd "${initrd}" && cpio -id --quiet bin/busybox)`],
      { encoding: "utf8" },
    );
    expect(x.status, x.stderr).toBe(0);
    expect(file(join(initrd, "bin/busybox"))).toMatch(/ARM aarch64.*statically linked/);
    // The OCI image's config names arm64.
    const oci = artifact("oci");
    const blobs = spawnSync("grep", ["-rhoa", '"architecture":"[a-z0-9]*"', join(oci, "blobs")], {
      encoding: "utf8",
    }).stdout;
    expect(blobs).toContain('"architecture":"arm64"');
    expect(blobs).not.toContain('"architecture":"amd64"');
    expect(existsSync(artifact("qcow2"))).toBe(true);
  });

  it("boots under qemu-system-aarch64 UEFI and passes the spec's checks (uname -m is aarch64)", () => {
    const r = kiln(["test", dir, "--on", "uefi", "--json"]);
    const report = JSON.parse(r.stdout) as {
      ok: boolean;
      targets: {
        target: string;
        ready: boolean;
        readySeconds: number;
        accel: string;
        bootError?: string;
        results: { name: string; passed: boolean; actual?: string }[];
      }[];
    };
    const t = report.targets[0]!;
    expect(t.ready, t.bootError).toBe(true);
    expect(t.accel).toBe("tcg");
    const failed = t.results.filter((c) => !c.passed);
    expect(failed, JSON.stringify(failed)).toEqual([]);
    expect(t.results.map((c) => c.name)).toEqual(
      expect.arrayContaining(["arm64 machine", "arm64 userland", "sshd active", "ssh port"]),
    );
    expect(r.code, r.stderr).toBe(0);
    console.log(`arm64 uefi/tcg ready in ${t.readySeconds}s`);
    // kiln vm finds the machine from the manifest beside the image (no --arch needed).
    const xml = kiln(["vm", artifact("qcow2"), "--print-libvirt"]);
    expect(xml.stdout).toContain("<type arch='aarch64' machine='virt'>hvm</type>");
  });

  it("refuses what an arm64 machine lacks: a BIOS boot, and BIOS in a spec", () => {
    const r = kiln(["test", dir, "--on", "bios"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/cannot test on bios: arm64 machines have no bios/);
    const spec = join(OUT, "bios.yaml");
    writeFileSync(spec, `extends: ${SPEC}\ndisk: { firmware: [uefi, bios] }\n`);
    const plan = kiln(["build", spec, "--plan"]);
    expect(plan.code).not.toBe(0);
    expect(plan.stderr).toMatch(/arm64 machines boot through UEFI only/);
  });

  it("runs a debian:bookworm arm64 container through qemu-user: uname -m is aarch64", () => {
    const env = { env: { KILN_STORE: STORE }, timeout: 900_000 };
    const pull = kiln(["pull", "--platform", "linux/arm64", "debian:bookworm"], env);
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.stdout).toMatch(/debian:bookworm \(linux\/arm64\)/);
    const run = kiln(
      ["run", "--rm", "--platform", "linux/arm64", "debian:bookworm", "uname", "-m"],
      env,
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout.trim()).toBe("aarch64");
    // Its programs are arm64 ones, not the host's.
    const arch = kiln(
      [
        "run",
        "--rm",
        "--platform",
        "linux/arm64",
        "debian:bookworm",
        "dpkg",
        "--print-architecture",
      ],
      env,
    );
    expect(arch.stdout.trim()).toBe("arm64");
    // Stored beside (never over) a host image of the same tag: without --platform it is not found.
    const host = kiln(["run", "--rm", "debian:bookworm", "true"], env);
    expect(host.code).toBe(125);
    expect(host.stderr).toMatch(/Unable to find image 'debian:bookworm' locally/);
    const images = JSON.parse(kiln(["images", "--json"], env).stdout) as { arch?: string }[];
    expect(images).toMatchObject([{ name: "debian", tag: "bookworm", arch: "arm64" }]);
    // --rm left no container behind.
    expect(JSON.parse(kiln(["ps", "-a", "--json"], env).stdout)).toEqual([]);
    // kiln probe installs a package in a booted arm64 container (systemd through qemu-user too).
    const probe = kiln(
      ["probe", "hello", "--on", "debian:bookworm", "--platform", "linux/arm64", "--json"],
      env,
    );
    const p = JSON.parse(probe.stdout) as { ok: boolean; images: { target: string }[] };
    expect(p.ok, probe.stdout + probe.stderr).toBe(true);
    expect(p.images[0]!.target).toBe("debian:bookworm (linux/arm64)");
    const rmi = kiln(["rmi", "--platform", "linux/arm64", "debian:bookworm"], env);
    expect(rmi.code, rmi.stderr).toBe(0);
    expect(JSON.parse(kiln(["images", "--json"], env).stdout)).toEqual([]);
  });
});
