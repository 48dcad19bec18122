import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isoGrubConfig } from "../../src/builder/steps/iso.js";
import { loadSpec } from "../../src/config/load.js";
import { planBuild } from "../../src/plan/plan.js";

const TMP = mkdtempSync(join(tmpdir(), "kiln-unit-iso-"));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

describe("installer ISO", () => {
  it("boots the installer by default and offers the live system without it", () => {
    const cfg = isoGrubConfig("web", "1.2.0", "console=ttyS0,115200");
    const entries = cfg.split("menuentry ").slice(1);
    expect(entries).toHaveLength(2);
    expect(entries[0]).toMatch(
      /^"Install web 1\.2\.0 .*linux \/boot\/vmlinuz kiln\.install console=ttyS0,115200/s,
    );
    expect(entries[1]).toMatch(
      /^"web 1\.2\.0 live \(installs nothing\)".*linux \/boot\/vmlinuz console=ttyS0/s,
    );
    expect(entries[1]).not.toContain("kiln.install");
    expect(cfg).toContain("set default=0");
    expect(cfg).toMatch(/terminal_output serial console/);
  });

  it("plans the disk before the ISO that carries it", () => {
    writeFileSync(join(TMP, "s.yaml"), "name: s\noutputs: [iso]\n");
    const l = loadSpec(join(TMP, "s.yaml"));
    const ids = planBuild(l.spec, l.canonical).steps.map((s) => s.id);
    expect(ids.indexOf("disk")).toBeGreaterThan(-1);
    expect(ids.indexOf("iso")).toBeGreaterThan(ids.indexOf("disk"));
  });
});
