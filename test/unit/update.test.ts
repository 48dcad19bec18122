import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { compatibleOf, raucSystemConf } from "../../src/builder/steps/updater.js";
import { loadSpec } from "../../src/config/load.js";
import { type Check, specSchema } from "../../src/config/schema.js";
import { parseRelease } from "../../src/deliver/bundle.js";
import { abGrubConfig } from "../../src/image/grubcfg.js";
import { healthChecksScript } from "../../src/render/checks.js";
import { SpecError } from "../../src/util/errors.js";

const fx = (f: string) => join(import.meta.dirname, "fixtures", f);

function runHealth(checks: Check[]) {
  const dir = mkdtempSync(join(tmpdir(), "kiln-health-"));
  try {
    const f = join(dir, "health");
    writeFileSync(f, healthChecksScript(checks));
    const lint = spawnSync("shellcheck", ["-s", "bash", f], { encoding: "utf8" });
    expect(lint.error, "shellcheck must be installed (scripts/test installs it)").toBeUndefined();
    expect(lint.stdout).toBe("");
    expect(lint.status).toBe(0);
    const r = spawnSync("bash", [f], { encoding: "utf8" });
    return { code: r.status, out: r.stdout };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("health checks judged on the device", () => {
  const parse = (c: unknown) => specSchema.shape.tests.parse([c])[0]!;

  it("pass when exit status and patterns match", () => {
    const r = runHealth([
      parse({
        name: "greets",
        run: "echo hello; echo warn >&2",
        stdout: "^hel+o$",
        stderr: "warn",
      }),
      parse({ name: "exit 3 expected", run: "exit 3", exit: 3 }),
      parse({ name: "root exists", file: "/" }),
    ]);
    expect(r.out).toContain("health: ok: greets");
    expect(r.out).toContain("health: ok: exit 3 expected");
    expect(r.code).toBe(0);
  });

  it("fail on a wrong status, a pattern mismatch or a missing file, naming each", () => {
    const r = runHealth([
      parse({ name: "fails", run: "false" }),
      parse({ name: "wrong output", run: "echo bye", stdout: "^hello$" }),
      parse({ name: "fine", run: "true" }),
      parse({ name: "no such file", file: "/no/such/file" }),
    ]);
    expect(r.out).toContain("health: FAILED: fails");
    expect(r.out).toContain("health: FAILED: wrong output");
    expect(r.out).toContain("health: ok: fine");
    expect(r.out).toContain("health: FAILED: no such file");
    expect(r.code).toBe(1);
  });
});

describe("A/B GRUB script", () => {
  const cfg = abGrubConfig({
    title: "sys",
    partA: 3,
    partB: 4,
    cmdline: "console=ttyS0",
    tries: 3,
    serial: true,
    timeoutSeconds: 1,
  });

  it("counts each slot's tries up to the limit, unrolled, and saves them before booting", () => {
    for (const slot of ["A", "B"]) {
      expect(cfg).toContain(
        `if [ "$${slot}_TRY" = 0 ]; then set ${slot}_TRY=1; set kiln_slot=${slot}`,
      );
      expect(cfg).toContain(
        `elif [ "$${slot}_TRY" = 2 ]; then set ${slot}_TRY=3; set kiln_slot=${slot}`,
      );
      expect(cfg).not.toContain(`"$${slot}_TRY" = 3 ]`);
    }
    expect(cfg.indexOf("save_env -f ($esp)/grub/grubenv A_TRY B_TRY")).toBeLessThan(
      cfg.indexOf("function kiln_boot_A"),
    );
  });

  it("is a script GRUB's own parser accepts, booting the counted slot without a menu at timeout 0", () => {
    const direct = abGrubConfig({
      title: "sys",
      partA: 3,
      partB: 4,
      cmdline: "",
      tries: 3,
      serial: false,
      timeoutSeconds: 0,
    });
    expect(direct).toContain('if [ "$kiln_slot" = A ]; then kiln_boot_A; boot');
    for (const c of [cfg, direct]) {
      const r = spawnSync("grub-script-check", [], { input: c });
      expect(r.error).toBeUndefined();
      expect(r.status, String(r.stderr)).toBe(0);
    }
  });

  it("finds slots by partition number and their filesystems by probing", () => {
    expect(cfg).toContain("set root=($kiln_disk,gpt3)");
    expect(cfg).toContain("set root=($kiln_disk,gpt4)");
    expect(cfg).toContain("probe --set=kiln_uuid --fs-uuid $root");
    expect(cfg).toMatch(
      /linux \/vmlinuz root=UUID=\$kiln_uuid rw rauc\.slot=B panic=10 console=ttyS0 \$kiln_cmdline/,
    );
  });
});

describe("RAUC configuration", () => {
  const spec = specSchema.parse({
    name: "edge",
    disk: { layout: "ab" },
    update: { compatible: "acme-edge" },
  });

  it("names both slots by partition label, the grub backend and verity-only bundles", () => {
    const conf = raucSystemConf(spec, true);
    expect(conf).toContain("compatible=acme-edge");
    expect(conf).toContain("bootloader=grub");
    expect(conf).toContain("grubenv=/boot/efi/grub/grubenv");
    expect(conf).toContain("bundle-formats=-plain");
    expect(conf).toMatch(
      /\[slot\.rootfs\.1\]\ndevice=\/dev\/disk\/by-partlabel\/root-b\ntype=ext4\nbootname=B/,
    );
    expect(conf).toContain("[keyring]\npath=/etc/rauc/keyring.pem");
    expect(raucSystemConf(spec, false)).not.toContain("[keyring]");
  });

  it("defaults compatible to the spec's name", () => {
    expect(
      compatibleOf(specSchema.parse({ name: "edge", disk: { layout: "ab" }, update: {} })),
    ).toBe("edge");
    expect(parseRelease("NAME=edge\nVERSION=2.0\nCOMPATIBLE=acme edge\n")).toEqual({
      name: "edge",
      version: "2.0",
      compatible: "acme edge",
    });
  });

  it("refuses update: without the ab layout, pointing into the update block", () => {
    let err: unknown;
    try {
      loadSpec(fx("update-single.yaml"));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SpecError);
    const d = (err as SpecError).diagnostics[0]!;
    expect(d.message).toContain("A/B updates need disk.layout: ab");
    expect(d.loc.file).toBe(fx("update-single.yaml"));
    expect(d.loc.line).toBe(4);
  });
});
