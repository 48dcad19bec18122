import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BundleFactsCache } from "../../src/deliver/bundlefacts.js";

const dir = mkdtempSync(join(tmpdir(), "kiln-bundlefacts-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("bundle facts cache", () => {
  it("reads label and cmdline, then the disk at most once per ttl; an edit is seen after it", () => {
    const bundle = join(dir, "web.netboot");
    mkdirSync(bundle);
    const c = { t: 0 };
    const cache = new BundleFactsCache(1000, () => c.t);
    expect(cache.get(bundle)).toEqual({ label: "web.netboot", cmdline: "" });
    writeFileSync(join(dir, "manifest.json"), JSON.stringify({ name: "web", version: "1.0.0" }));
    writeFileSync(join(bundle, "cmdline"), "console=ttyS0\n");
    c.t = 999;
    expect(cache.get(bundle)).toMatchObject({ label: "web.netboot", cmdline: "" });
    c.t = 1000;
    expect(cache.get(bundle)).toMatchObject({ label: "web 1.0.0", cmdline: "console=ttyS0" });
    writeFileSync(join(dir, "manifest.json"), JSON.stringify({ name: "web", version: "1.0.10" }));
    c.t = 2000;
    expect(cache.get(bundle).label).toBe("web 1.0.10");
  });
});
