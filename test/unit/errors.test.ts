import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ERROR_CODES, KilnError } from "../../src/util/errors.js";

const SRC = resolve(import.meta.dirname, "../../src");
const source = (dir: string): string =>
  readdirSync(dir)
    .map((n) => join(dir, n))
    .map((p) =>
      statSync(p).isDirectory() ? source(p) : p.endsWith(".ts") ? readFileSync(p, "utf8") : "",
    )
    .join("\n");

describe("error catalog", () => {
  it("lists only codes kiln uses", () => {
    const all = source(SRC).replace(/export const ERROR_CODES = \{[\s\S]*?\n\}/, "");
    const unused = Object.keys(ERROR_CODES).filter((c) => !all.includes(`"${c}"`));
    expect(unused).toEqual([]);
  });

  it("gives each error its code's exit status unless the caller says otherwise", () => {
    expect(new KilnError("USAGE", "x").exitCode).toBe(2);
    expect(new KilnError("BOOT_FAILED", "x").exitCode).toBe(2);
    expect(new KilnError("RUN_NOT_FOUND", "x").exitCode).toBe(127);
    expect(new KilnError("EXEC_FAILED", "x").exitCode).toBe(1);
    expect(new KilnError("NO_MANIFEST", "x", { exitCode: 2 }).exitCode).toBe(2);
  });
});
