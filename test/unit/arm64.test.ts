import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { targetsFor, unbootable } from "../../src/check/run.js";
import { loadSpec } from "../../src/config/load.js";
import { parsePlatform } from "../../src/containers/store.js";
import { rootfsRecipe } from "../../src/plan/recipe.js";
import { domainXml } from "../../src/runtime/libvirt.js";
import { chooseAccel, machineFor, qemuArgs } from "../../src/runtime/qemu.js";
import { parseEntry } from "../../src/util/binfmt.js";
import { SpecError } from "../../src/util/errors.js";

const dir = mkdtempSync(join(tmpdir(), "kiln-unit-arm64-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function spec(yaml: string) {
  const f = join(dir, `s${n++}.yaml`);
  writeFileSync(f, `name: a\ndistribution: { id: debian, release: bookworm }\n${yaml}`);
  return f;
}

function errorsOf(file: string): string[] {
  try {
    loadSpec(file);
  } catch (e) {
    if (e instanceof SpecError) return e.diagnostics.map((d) => d.message);
    throw e;
  }
  return [];
}

describe("arm64 specs", () => {
  it("default to UEFI only and the PL011 console; amd64 keeps BIOS and ttyS0", () => {
    const arm = loadSpec(spec("architecture: arm64\n")).spec;
    expect(arm.disk.firmware).toEqual(["uefi"]);
    expect(arm.console.serial).toBe("ttyAMA0,115200");
    const x86 = loadSpec(spec("")).spec;
    expect(x86.disk.firmware).toEqual(["uefi", "bios"]);
    expect(x86.console.serial).toBe("ttyS0,115200");
    // What the spec says wins.
    const own = loadSpec(spec('architecture: arm64\nconsole: { serial: "" }\n')).spec;
    expect(own.console.serial).toBe("");
  });

  it("refuse BIOS and ISO outputs clearly", () => {
    expect(errorsOf(spec("architecture: arm64\ndisk: { firmware: [uefi, bios] }\n"))).toEqual([
      "disk.firmware: arm64 machines boot through UEFI only: set disk.firmware: [uefi]",
    ]);
    expect(errorsOf(spec("architecture: arm64\noutputs: [disk, iso]\n"))).toEqual([
      expect.stringMatching(/^outputs: kiln makes no arm64 iso yet/),
    ]);
    expect(errorsOf(spec("architecture: arm64\noutputs: [disk, qcow2, tar, oci]\n"))).toEqual([]);
  });

  it("bootstrap arm64 with the arm64 cloud kernel", () => {
    const r = rootfsRecipe(loadSpec(spec("architecture: arm64\n")).spec);
    expect(r.args).toContain("--architectures=arm64");
    expect(r.packages).toContain("linux-image-cloud-arm64");
    expect(r.packages).not.toContain("linux-image-cloud-amd64");
  });
});

describe("arm64 VMs", () => {
  it("boot qemu-system-aarch64's virt machine on a plain ARMv8 CPU, with AAVMF", () => {
    expect(machineFor("arm64")).toMatchObject({
      binary: "qemu-system-aarch64",
      machine: "virt",
      console: "ttyAMA0",
    });
    const a = qemuArgs({
      image: "/x.qcow2",
      arch: "arm64",
      firmware: "uefi",
      accel: "tcg",
      qmp: "/q",
      code: "/AAVMF_CODE.fd",
      vars: "/v.fd",
    });
    const line = a.join(" ");
    expect(line).toContain("-machine virt");
    expect(line).toContain("-cpu cortex-a57");
    expect(line).not.toContain("q35");
    expect(a).toContain("if=pflash,format=raw,unit=0,readonly=on,file=/AAVMF_CODE.fd");
    // amd64 is as before: q35 and no -cpu under TCG.
    const x = qemuArgs({ image: "/x.raw", firmware: "bios", accel: "tcg", qmp: "/q" });
    expect(x.join(" ")).toContain("-machine q35");
    expect(x).not.toContain("-cpu");
  });

  it("have a libvirt domain for the virt machine, emulated on this host", () => {
    const o = { name: "a", image: "/a.qcow2", firmware: "uefi" as const, cpus: 2, memoryMiB: 1024 };
    const arm = domainXml({ ...o, arch: "arm64" });
    expect(arm).toContain("<type arch='aarch64' machine='virt'>hvm</type>");
    expect(arm).toContain("<domain type='qemu'>");
    expect(arm).not.toContain("<apic/>");
    expect(domainXml(o)).toContain("<type arch='x86_64' machine='q35'>hvm</type>");
  });

  it("are emulated on this amd64 host: auto is TCG, KVM is refused", async () => {
    await expect(chooseAccel("auto", "arm64")).resolves.toBe("tcg");
    await expect(chooseAccel("kvm", "arm64")).rejects.toThrow(/cannot use KVM/);
  });

  it("have no BIOS target in kiln test, and nspawn only when asked for", () => {
    const a = { disk: "/d.raw", rootfs: "/r" };
    expect(targetsFor(a, "arm64")).toEqual(["uefi"]);
    expect(targetsFor(a)).toEqual(["nspawn", "uefi", "bios"]);
    expect(unbootable("bios", "arm64")).toMatch(/no bios/);
    expect(unbootable("uefi", "arm64")).toBeUndefined();
  });
});

describe("platforms and binfmt_misc", () => {
  it("reads docker's --platform", () => {
    expect(parsePlatform("linux/arm64")).toBe("arm64");
    expect(parsePlatform("linux/arm64/v8")).toBe("arm64");
    expect(parsePlatform("linux/amd64")).toBeUndefined(); // the host's own
    expect(parsePlatform(undefined)).toBeUndefined();
    expect(() => parsePlatform("linux/riscv64")).toThrow(/unsupported platform/);
  });

  it("parses the kernel's entry for an interpreter", () => {
    expect(
      parseEntry(
        "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c46\n",
      ),
    ).toEqual({
      enabled: true,
      interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
      flags: "POF",
    });
    expect(parseEntry("disabled\ninterpreter /x\nflags: \n").enabled).toBe(false);
  });
});
