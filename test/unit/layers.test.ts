import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

/**
 * The architecture's layer rule as a test: every relative import under src/
 * must point at its own folder or at one this table allows. A helper two
 * layers need lives below both; it is never imported sideways or upwards.
 * (The same table is in the README's "Layout" section.)
 */
const MAY_IMPORT: Record<string, string[]> = {
  util: [],
  distro: ["util"],
  config: ["distro", "util"],
  image: ["util"],
  render: ["config", "util"],
  plan: ["config", "distro", "util"],
  artifact: ["plan", "config", "util"],
  runtime: ["image", "util"],
  check: ["runtime", "render", "config", "image", "util"],
  seed: ["config", "image", "render", "util"],
  cloud: ["config", "image", "runtime", "distro", "util"],
  containers: ["config", "plan", "image", "runtime", "distro", "check", "util"],
  builder: ["plan", "artifact", "config", "distro", "image", "render", "seed", "cloud", "util"],
  fleet: ["util"],
  publish: ["util"],
  deliver: ["fleet", "artifact", "config", "image", "runtime", "util"],
  cli: [
    "builder",
    "artifact",
    "check",
    "cloud",
    "containers",
    "deliver",
    "fleet",
    "publish",
    "distro",
    "image",
    "plan",
    "render",
    "runtime",
    "seed",
    "config",
    "util",
  ],
};

const SRC = resolve(import.meta.dirname, "../../src");

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith(".ts") ? [p] : [];
  });
}

/** Every relative import or re-export of one file, as the folder it lands in. */
function importsOf(file: string): { spec: string; folder: string }[] {
  const text = readFileSync(file, "utf8");
  const out: { spec: string; folder: string }[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s+"(\.[^"]+)"/g)) {
    const target = relative(SRC, resolve(dirname(file), m[1]!));
    out.push({ spec: m[1]!, folder: target.split("/")[0]! });
  }
  for (const m of text.matchAll(/\bimport\(\s*"(\.[^"]+)"\s*\)/g)) {
    const target = relative(SRC, resolve(dirname(file), m[1]!));
    out.push({ spec: m[1]!, folder: target.split("/")[0]! });
  }
  return out;
}

describe("layers", () => {
  const files = tsFiles(SRC);

  it("every folder under src/ is in the table", () => {
    const folders = readdirSync(SRC).filter((n) => statSync(join(SRC, n)).isDirectory());
    expect(folders.filter((f) => !(f in MAY_IMPORT))).toEqual([]);
  });

  it("imports point only where the table allows", () => {
    const wrong: string[] = [];
    for (const f of files) {
      const from = relative(SRC, f).split("/")[0]!;
      for (const i of importsOf(f)) {
        if (i.folder === from || MAY_IMPORT[from]?.includes(i.folder)) continue;
        wrong.push(`${relative(SRC, f)} → ${i.spec} (${from} may not import ${i.folder})`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("a CLI verb does not import another verb (shared code lives in a library)", () => {
    const wrong = files
      .filter((f) => relative(SRC, f).startsWith("cli/") && !f.endsWith("/main.ts"))
      .flatMap((f) =>
        importsOf(f)
          .filter((i) => i.folder === "cli" && !i.spec.endsWith("/output.js"))
          .map((i) => `${relative(SRC, f)} → ${i.spec}`),
      );
    expect(wrong).toEqual([]);
  });

  it("the table itself has no cycles", () => {
    const seen = new Set<string>();
    const visit = (n: string, path: string[]): void => {
      expect(path, `cycle ${[...path, n].join(" → ")}`).not.toContain(n);
      if (seen.has(`${path.join(">")}>${n}`)) return;
      seen.add(`${path.join(">")}>${n}`);
      for (const d of MAY_IMPORT[n] ?? []) visit(d, [...path, n]);
    };
    for (const n of Object.keys(MAY_IMPORT)) visit(n, []);
  });
});
