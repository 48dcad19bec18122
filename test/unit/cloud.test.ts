import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { algoOf, findSum } from "../../src/cloud/checksums.js";
import { nameFrom } from "../../src/cloud/import.js";
import { loadSpec } from "../../src/config/load.js";
import { planBuild } from "../../src/plan/plan.js";
import { SpecError } from "../../src/util/errors.js";

const A = "a".repeat(128);
const B = "b".repeat(64);

describe("checksum lists", () => {
  it("finds a file in GNU (SHA512SUMS) and BSD (CHECKSUM) style lists", () => {
    const list = `${"c".repeat(128)}  debian-12-nocloud-amd64.qcow2\n${A}  debian-12-genericcloud-amd64.qcow2\n${B} *bin.raw\nSHA512 (Fedora.qcow2) = ${A}\n`;
    expect(findSum(list, "debian-12-genericcloud-amd64.qcow2")).toBe(A);
    expect(findSum(list, "bin.raw")).toBe(B);
    expect(findSum(list, "Fedora.qcow2")).toBe(A);
    expect(findSum(list, "missing.qcow2")).toBeUndefined();
  });
  it("tells SHA-512 from SHA-256 by length and refuses anything else", () => {
    expect(algoOf(A)).toBe("sha512");
    expect(algoOf(B)).toBe("sha256");
    expect(() => algoOf("abc")).toThrow(/not a SHA-512 or SHA-256 digest/);
  });
  it("names an import after its file", () => {
    expect(nameFrom("https://cloud.debian.org/x/debian-12-genericcloud-amd64.tar.xz")).toBe(
      "debian-12-genericcloud-amd64",
    );
    expect(nameFrom("/tmp/Jammy-Server.img?x=1")).toBe("jammy-server");
    expect(nameFrom("noble.qcow2")).toBe("noble");
  });
});

const TMP = mkdtempSync(join(tmpdir(), "kiln-unit-cloud-"));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

function spec(text: string) {
  const dir = mkdtempSync(join(TMP, "s-"));
  writeFileSync(join(dir, "s.yaml"), text);
  return loadSpec(join(dir, "s.yaml"));
}

describe("base: image:NAME", () => {
  it("plans copy, customise, disk, qcow2: no root filesystem, kernel or boot loader steps", () => {
    const l = spec("name: c\nbase: image:deb12\npackages: [jq]\ndisk: {size: 4G}\n");
    const p = planBuild(l.spec, l.canonical);
    expect(p.base).toBe("image:deb12");
    expect(p.steps.map((s) => s.id)).toEqual(["base", "customise", "disk", "qcow2", "manifest"]);
    expect(p.steps[0]!.title).toBe("copy of image:deb12, grown to 4G");
  });
  it("refuses outputs a customised import cannot make, with the spec's location", () => {
    try {
      spec("name: c\nbase: image:deb12\noutputs: [disk, netboot]\n");
      throw new Error("expected a SpecError");
    } catch (e) {
      expect(e).toBeInstanceOf(SpecError);
      expect((e as SpecError).message).toMatch(/:3:\d+: .*disk outputs only .*, not netboot/);
    }
  });
  it("refuses a base that is not image:NAME", () => {
    expect(() => spec("name: c\nbase: deb12\n")).toThrow(/expected image:NAME/);
  });
});
