import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { invalidFacts, loadInventory, selectGroup } from "../../src/deliver/inventory.js";
import { SpecError } from "../../src/util/errors.js";

const fx = (f: string) => join(import.meta.dirname, "fixtures", f);

describe("inventory selection", () => {
  const inv = loadInventory(fx("inventory.yaml"));

  it("matches exact labels, with a list as OR and MACs in any spelling", () => {
    expect(selectGroup(inv, { mac: "52:54:00:00:00:01" })?.name).toBe("web-macs");
    expect(selectGroup(inv, { mac: "52:54:00:00:00:02" })?.name).toBe("web-macs");
    expect(selectGroup(inv, { mac: "52:54:00:00:00:0A".toLowerCase() })?.name).toBe("default");
    expect(selectGroup(inv, { mac: "52:54:00:00:00:01".toUpperCase() })?.name).toBe("web-macs");
  });

  it("the most specific matching group wins; the default catches the rest", () => {
    expect(selectGroup(inv, { rack: "r1", serial: "S-42" })?.name).toBe("db-rack-serial");
    expect(selectGroup(inv, { rack: "r1", serial: "S-43" })?.name).toBe("db-rack");
    expect(selectGroup(inv, { rack: "r2" })?.name).toBe("default");
  });

  it("without a default group, an unknown machine matches nothing", () => {
    const noDefault = { ...inv, groups: inv.groups.filter((g) => g.name !== "default") };
    expect(selectGroup(noDefault, { mac: "52:54:00:00:00:99" })).toBeUndefined();
  });
});

describe("inventory errors", () => {
  it("names every problem with file:line:col", () => {
    let err: SpecError | undefined;
    try {
      loadInventory(fx("inventory-bad.yaml"));
    } catch (e) {
      err = e as SpecError;
    }
    expect(err).toBeInstanceOf(SpecError);
    expect(err!.diagnostics.map((d) => `${d.loc.line}: ${d.message}`)).toEqual([
      "6: unknown key `selectr` (did you mean `selector`?)",
    ]);
  });

  it("then refuses references to missing profiles and malformed MACs", () => {
    const fixed = fx("inventory-bad2.yaml");
    let err: SpecError | undefined;
    try {
      loadInventory(fixed);
    } catch (e) {
      err = e as SpecError;
    }
    expect(err!.diagnostics.map((d) => `${d.loc.line}:${d.loc.column} ${d.message}`)).toEqual([
      expect.stringMatching(/^4:\d+ groups\[0\]\.profile: group a: no profile named nope$/),
      expect.stringMatching(/^5:\d+ groups\[1\]\.selector\.mac: group b: malformed MAC/),
    ]);
  });

  it("checks client facts", () => {
    expect(
      invalidFacts({ mac: "52:54:00:00:00:01", uuid: "6f1f9a5e-0000-4000-8000-000000000001" }),
    ).toBeUndefined();
    expect(invalidFacts({ mac: "../../etc/passwd" })).toMatch(/malformed MAC/);
    expect(invalidFacts({ uuid: "not-a-uuid" })).toMatch(/malformed UUID/);
  });
});
