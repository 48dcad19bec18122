import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SCHEMA_FILE, STARTER_SPEC } from "../../src/cli/init.js";
import { specJsonSchema } from "../../src/config/jsonschema.js";
import { loadSpec } from "../../src/config/load.js";
import { mergeSpecs } from "../../src/config/merge.js";
import { inventoryJsonSchema } from "../../src/deliver/inventory.js";
import { SpecError } from "../../src/util/errors.js";

const fx = (f: string) => join(import.meta.dirname, "fixtures", f);

function specErrors(file: string): SpecError {
  try {
    loadSpec(file);
  } catch (e) {
    if (e instanceof SpecError) return e;
    throw e;
  }
  throw new Error("expected a SpecError");
}

describe("spec errors", () => {
  it("reports every problem at once, with file:line:col", () => {
    const err = specErrors(fx("typos.yaml"));
    const lines = err.diagnostics.map((d) => `${d.loc.line}:${d.loc.column} ${d.message}`);
    expect(lines).toEqual([
      "2:1 unknown key `pakages` (did you mean `packages`?)",
      expect.stringMatching(/^3:11 hostname: not a valid host name/),
      expect.stringMatching(/^5:11 disk\.layout: expected one of "single", "ab"/),
      "7:20 unknown key `passwrd` (did you mean `password`?)",
    ]);
    expect(err.diagnostics[0]!.loc.file).toBe(fx("typos.yaml"));
  });

  it("prints a code frame with a caret under the column", () => {
    const d = specErrors(fx("typos.yaml")).diagnostics[0]!;
    expect(d.frame).toContain("> 2 | pakages: [curl]");
    expect(d.frame).toMatch(/\n\s+\|\s\^/);
  });

  it("points at YAML syntax errors", () => {
    const dir = join(import.meta.dirname, "fixtures");
    const err = specErrors(join(dir, "broken.yaml"));
    expect(err.diagnostics[0]!.loc.line).toBe(3);
  });

  it("refuses extends cycles", () => {
    expect(() => loadSpec(fx("cycle-a.yaml"))).toThrow(/extends cycle/);
  });

  it("requires exactly one of content and source for files", () => {
    const err = specErrors(fx("file-both.yaml"));
    expect(err.diagnostics[0]!.message).toMatch(/exactly one of content or source/);
    expect(err.diagnostics[0]!.loc.line).toBe(3);
  });
});

describe("extends", () => {
  it("merges lists by key and unions scalar lists; scalars override", () => {
    const { spec, files } = loadSpec(fx("child.yaml"));
    expect(files.map((f) => f.split("/").pop())).toEqual(["child.yaml", "base.yaml"]);
    expect(spec.name).toBe("child");
    expect(spec.hostname).toBe("child");
    expect(spec.packages).toEqual(["openssh-server", "curl", "nginx"]);
    expect(spec.users.map((u) => [u.name, u.password, u.groups])).toEqual([
      ["admin", "generate", ["sudo", "adm"]],
      ["ops", undefined, []],
    ]);
    expect(spec.files).toHaveLength(1);
  });

  it("mergeSpecs keeps base objects and overrides leaves", () => {
    expect(mergeSpecs({ disk: { layout: "ab", size: "2G" } }, { disk: { size: "4G" } })).toEqual({
      disk: { layout: "ab", size: "4G" },
    });
  });
});

describe("defaults", () => {
  it("fills a minimal spec", () => {
    const { spec } = loadSpec(fx("base.yaml"));
    expect(spec.distribution).toEqual({
      id: "debian",
      release: "bookworm",
      updates: true,
      security: true,
    });
    expect(spec.dbus).toBe(true);
    expect(spec.profile).toBe("minimal");
    expect(spec.root.password).toBeUndefined();
    expect(spec.network.interfaces[0]!.dhcp).toBe(true);
    expect(spec.disk.firmware).toEqual(["uefi", "bios"]);
  });
});

describe("JSON Schema", () => {
  it("the committed schema/spec.json matches the schema in code", () => {
    const committed = JSON.parse(
      readFileSync(join(import.meta.dirname, "../../schema/spec.json"), "utf8"),
    );
    expect(committed).toEqual(specJsonSchema());
  });
  it("the committed schema/inventory.json matches the inventory schema", async () => {
    const committed = JSON.parse(
      readFileSync(join(import.meta.dirname, "../../schema/inventory.json"), "utf8"),
    );
    expect(committed).toEqual(inventoryJsonSchema());
  });
});

describe("spec rules", () => {
  const dir = mkdtempSync(join(tmpdir(), "kiln-rules-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };

  it("places a cross-field error in the file that set the key, as path: message", () => {
    write("ab-base.yaml", "disk: { size: 2G }\nupdate: { tries: 2 }\n");
    const err = specErrors(write("ab.yaml", "extends: ./ab-base.yaml\nname: ab\n"));
    expect(err.diagnostics).toHaveLength(1);
    const d = err.diagnostics[0]!;
    expect(d.loc).toMatchObject({ file: join(dir, "ab-base.yaml"), line: 2, column: 9 });
    expect(d.message).toBe("update: A/B updates need disk.layout: ab");
  });

  it("warns without failing: an unknown release, tests without a serial console", () => {
    const l = loadSpec(
      write(
        "w.yaml",
        'name: w\ndistribution: { release: forky }\nconsole: { serial: "" }\ntests: [{ run: "true" }]\n',
      ),
    );
    expect(l.warnings.map((w) => `${w.loc.line} ${w.message}`)).toEqual([
      expect.stringMatching(/^2 distribution\.release: kiln does not know debian release "forky"/),
      expect.stringMatching(/^3 console\.serial: kiln test reads results from the serial console/),
    ]);
  });

  it("keeps name and version to what file names (NAME_VERSION.raw) can carry", () => {
    const lines = specErrors(
      write("n.yaml", 'name: my_app\nversion: "1.0 beta"\n'),
    ).diagnostics.map((d) => d.message);
    expect(lines).toEqual([
      expect.stringMatching(/^name: use lower-case letters, digits/),
      expect.stringMatching(/^version: use letters, digits/),
    ]);
  });

  it("hashes the contents of source: trees, so an edited overlay is a new spec", () => {
    mkdirSync(join(dir, "overlay/etc"), { recursive: true });
    writeFileSync(join(dir, "overlay/etc/app.conf"), "a=1\n");
    const spec = write("o.yaml", "name: o\nfiles: [{ path: /, source: ./overlay }]\n");
    const before = loadSpec(spec).canonical;
    expect(loadSpec(spec).canonical).toBe(before);
    writeFileSync(join(dir, "overlay/etc/app.conf"), "a=2\n");
    expect(loadSpec(spec).canonical).not.toBe(before);
  });
});

describe("kiln init's starter spec", () => {
  it("is a valid spec whose $schema is the file kiln init writes beside it", () => {
    const dir = mkdtempSync(join(tmpdir(), "kiln-init-"));
    try {
      const file = join(dir, "kiln.yaml");
      writeFileSync(file, STARTER_SPEC.replaceAll("NAME", "demo"));
      expect(STARTER_SPEC.split("\n")[0]).toBe(`# yaml-language-server: $schema=./${SCHEMA_FILE}`);
      expect(STARTER_SPEC).not.toMatch(/https?:\/\/[^\s]*kiln/);
      const { spec } = loadSpec(file);
      expect(spec.users[0]!.groups).toEqual(["sudo"]);
      expect(spec.tests.map((t) => t.name)).toEqual(
        expect.arrayContaining(["security updates", "admin may sudo", "system bus", "root grows"]),
      );
      expect(String(specJsonSchema().$id)).not.toContain("kiln.dev");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
