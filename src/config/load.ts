import { dirname, resolve } from "node:path";
import { type Diagnostic, KilnError, SpecError } from "../util/errors.js";
import { treeDigest } from "../util/hash.js";
import { mergeSpecs } from "./merge.js";
import { checkRules, type Finding } from "./rules.js";
import { archDefaults, type Spec, specSchema } from "./schema.js";
import { diagnosticAt, issuesToDiagnostics, type ParsedYaml, parseYamlFile } from "./yaml.js";

export interface LoadedSpec {
  spec: Spec;
  /** What the spec's rules warn about, located like errors; the build prints them. */
  warnings: Diagnostic[];
  /** The spec file and every file it extends, outermost first. */
  files: string[];
  /** Directory of the outermost spec; `source:` paths resolve against their own file. */
  dir: string;
  /** Canonical JSON of the merged spec and its `source:` trees' digests (for hashing). */
  canonical: string;
}

/** Load, compose (`extends`) and validate a spec; all problems are reported together. */
export function loadSpec(path: string): LoadedSpec {
  const file = resolve(path);
  const chain = loadChain(file, []);
  const diagnostics: Diagnostic[] = [];
  // Check every file on its own first so each error points into the file that has it.
  for (const p of chain) diagnostics.push(...validate(p, true));
  if (diagnostics.length) throw new SpecError(diagnostics);

  let merged: unknown = {};
  for (const p of [...chain].reverse()) {
    const { extends: _drop, ...rest } = p.value;
    merged = mergeSpecs(merged, rest);
  }
  const top = chain[0]!;
  const result = specSchema.safeParse(archDefaults(merged));
  if (!result.success)
    throw new SpecError(issuesToDiagnostics(result.error.issues, top, specSchema));
  const spec = result.data;
  // A finding points into the file that set the first key of its path (the outermost such file).
  const locate = (f: Finding) => {
    const at = chain.find((p) => p.value[String(f.path[0])] !== undefined) ?? top;
    return diagnosticAt(at, f.path, f.message);
  };
  const { errors, warnings } = checkRules(spec);
  if (errors.length) throw new SpecError(errors.map(locate));
  if (spec.agent?.keyring) {
    const named = (p: ParsedYaml) =>
      (p.value.agent as { keyring?: unknown } | undefined)?.keyring !== undefined;
    const from = chain.find(named)?.file ?? top.file;
    spec.agent.keyring = resolve(from, "..", spec.agent.keyring);
  }
  // Relative `source:` paths belong to the file that named them.
  for (const f of spec.files) {
    if (f.source) f.source = resolve(originOf(chain, f.path) ?? top.file, "..", f.source);
  }
  if (spec.update?.keyring) {
    const named = (p: ParsedYaml) =>
      (p.value.update as { keyring?: unknown } | undefined)?.keyring !== undefined;
    const from = chain.find(named)?.file ?? top.file;
    spec.update.keyring = resolve(from, "..", spec.update.keyring);
  }
  return {
    spec,
    warnings: warnings.map(locate),
    files: chain.map((c) => c.file),
    dir: dirname(top.file),
    // The contents of `source:` trees count too: an edited overlay is a different spec.
    canonical: stableJson({
      spec,
      sources: spec.files.flatMap((f) => (f.source ? [[f.source, treeDigest(f.source)]] : [])),
    }),
  };
}

function validate(p: ParsedYaml, partial: boolean): Diagnostic[] {
  // A base spec may leave out what the extending spec supplies (e.g. name).
  const schema = partial ? specSchema.partial() : specSchema;
  const result = schema.safeParse(p.value);
  return result.success ? [] : issuesToDiagnostics(result.error.issues, p, schema);
}

function loadChain(file: string, seen: string[]): ParsedYaml[] {
  if (seen.includes(file)) {
    throw new KilnError("SPEC_EXTENDS_CYCLE", `extends cycle: ${[...seen, file].join(" → ")}`);
  }
  const parsed = parseYamlFile(file);
  const ext = parsed.value.extends;
  const bases = typeof ext === "string" ? [ext] : Array.isArray(ext) ? ext : [];
  const chain = [parsed];
  // Later bases win over earlier ones; the file itself wins over all.
  for (const b of [...bases].reverse()) {
    if (typeof b !== "string") continue;
    chain.push(...loadChain(resolve(dirname(file), b), [...seen, file]));
  }
  return chain;
}

function originOf(chain: ParsedYaml[], filePath: string): string | undefined {
  for (const p of chain) {
    const files = p.value.files;
    if (
      Array.isArray(files) &&
      files.some((f) => f && typeof f === "object" && f.path === filePath)
    )
      return p.file;
  }
  return undefined;
}

/** JSON with sorted keys, so equal specs hash equally. */
export function stableJson(v: unknown): string {
  return JSON.stringify(v, (_k, val) =>
    val && typeof val === "object" && !Array.isArray(val)
      ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => a.localeCompare(b)))
      : val,
  );
}
