import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { closest, distance } from "fastest-levenshtein";
import {
  type Document,
  isMap,
  isNode,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
} from "yaml";
import type { z } from "zod";
import { type Diagnostic, KilnError, SpecError } from "../util/errors.js";
import { codeFrame } from "./frame.js";
import { mergeSpecs } from "./merge.js";
import { type Spec, specSchema } from "./schema.js";

export interface LoadedSpec {
  spec: Spec;
  /** The spec file and every file it extends, outermost first. */
  files: string[];
  /** Directory of the outermost spec; `source:` paths resolve against their own file. */
  dir: string;
  /** Canonical JSON of the merged spec (for hashing). */
  canonical: string;
}

interface Parsed {
  file: string;
  text: string;
  doc: Document.Parsed;
  lines: LineCounter;
  value: Record<string, unknown>;
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
  const result = specSchema.safeParse(merged);
  if (!result.success) throw new SpecError(issuesToDiagnostics(result.error.issues, top));
  // Relative `source:` paths belong to the file that named them.
  const spec = result.data;
  for (const f of spec.files) {
    if (f.source) f.source = resolve(originOf(chain, f.path) ?? top.file, "..", f.source);
  }
  return {
    spec,
    files: chain.map((c) => c.file),
    dir: dirname(top.file),
    canonical: stableJson(spec),
  };
}

function loadChain(file: string, seen: string[]): Parsed[] {
  if (seen.includes(file)) {
    throw new KilnError("SPEC_EXTENDS_CYCLE", `extends cycle: ${[...seen, file].join(" → ")}`);
  }
  const parsed = parseFile(file);
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

function parseFile(file: string): Parsed {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new KilnError("SPEC_NOT_FOUND", `cannot read spec ${file}: ${(err as Error).message}`, {
      hint: "`kiln init` writes a starter spec",
    });
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    throw new SpecError(
      doc.errors.map((e) => {
        const { line, col } = lines.linePos(e.pos[0]);
        return {
          loc: { file, line, column: col },
          message: e.message.split("\n")[0]!,
          frame: codeFrame(text, line, col),
        };
      }),
    );
  }
  const value = doc.toJS() ?? {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new SpecError([
      { loc: { file, line: 1, column: 1 }, message: "a spec must be a mapping of keys" },
    ]);
  }
  return { file, text, doc, lines, value };
}

function validate(p: Parsed, partial: boolean): Diagnostic[] {
  // A base spec may leave out what the extending spec supplies (e.g. name).
  const schema = partial ? specSchema.partial() : specSchema;
  const result = schema.safeParse(p.value);
  return result.success ? [] : issuesToDiagnostics(result.error.issues, p);
}

function issuesToDiagnostics(issues: z.core.$ZodIssue[], p: Parsed): Diagnostic[] {
  const out: Diagnostic[] = [];
  for (const issue of issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        const known = knownKeys(issue.path);
        const guess = known.length ? closest(key, known) : undefined;
        const hint = guess && similar(key, guess) ? ` (did you mean \`${guess}\`?)` : "";
        out.push(at(p, [...issue.path, key], true, `unknown key \`${key}\`${hint}`));
      }
      continue;
    }
    out.push(at(p, issue.path, false, `${describePath(issue.path)}: ${messageOf(issue)}`));
  }
  return out.sort((a, b) => a.loc.line - b.loc.line || a.loc.column - b.loc.column);
}

function messageOf(issue: z.core.$ZodIssue): string {
  if (issue.code === "invalid_value" && "values" in issue) {
    return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
  }
  if (issue.code === "invalid_type" && issue.input === undefined) return "is required";
  return issue.message;
}

function describePath(path: PropertyKey[]): string {
  if (!path.length) return "spec";
  return path
    .map((k, i) => (typeof k === "number" ? `[${k}]` : i ? `.${String(k)}` : String(k)))
    .join("");
}

/** Locate a path in the YAML document; for unknown keys point at the key itself. */
function at(p: Parsed, path: PropertyKey[], keyNode: boolean, message: string): Diagnostic {
  let node: unknown = p.doc.contents;
  let offset = 0;
  for (const [i, k] of path.entries()) {
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find((it) => isPair(it) && isScalar(it.key) && it.key.value === k);
      if (!pair) break;
      node = (keyNode && last) || !pair.value ? pair.key : pair.value;
    } else if (isSeq(node) && typeof k === "number") {
      const item = node.items[k];
      if (!item) break;
      node = item;
    } else break;
    if (isNode(node) && node.range) offset = node.range[0];
  }
  if (isNode(node) && node.range) offset = node.range[0];
  const { line, col } = p.lines.linePos(offset);
  return { loc: { file: p.file, line, column: col }, message, frame: codeFrame(p.text, line, col) };
}

/** Keys the schema allows at a path, for "did you mean" suggestions. */
function knownKeys(path: PropertyKey[]): string[] {
  // biome-ignore lint/suspicious/noExplicitAny: walking zod internals generically
  let s: any = specSchema;
  const unwrap = () => {
    for (;;) {
      const def = s?._zod?.def;
      if (!def) return;
      if (def.type === "optional" || def.type === "default" || def.type === "nullable")
        s = def.innerType;
      else if (def.type === "pipe") s = def.in;
      else if (def.type === "array") s = def.element;
      else return;
    }
  };
  unwrap();
  for (const k of path) {
    if (typeof k === "number") {
      unwrap();
      continue;
    }
    s = s?._zod?.def?.shape?.[k];
    unwrap();
  }
  const shape = s?._zod?.def?.shape;
  return shape ? Object.keys(shape) : [];
}

function similar(a: string, b: string): boolean {
  // Edit distance small relative to length: "pakages" → "packages", not "x" → "name".
  const d = distance(a, b);
  return d <= Math.max(2, Math.floor(b.length / 3));
}

function originOf(chain: Parsed[], filePath: string): string | undefined {
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
