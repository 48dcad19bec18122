import { readFileSync } from "node:fs";
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

/** A YAML file parsed with source positions, so problems can name file:line:col. */
export interface ParsedYaml {
  file: string;
  text: string;
  doc: Document.Parsed;
  lines: LineCounter;
  value: Record<string, unknown>;
}

export function parseYamlFile(file: string, what = "spec"): ParsedYaml {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new KilnError(
      "SPEC_NOT_FOUND",
      `cannot read ${what} ${file}: ${(err as Error).message}`,
      {
        ...(what === "spec" ? { hint: "`kiln init` writes a starter spec" } : {}),
      },
    );
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
      { loc: { file, line: 1, column: 1 }, message: `a ${what} must be a mapping of keys` },
    ]);
  }
  return { file, text, doc, lines, value };
}

/** zod issues → diagnostics pointing into the YAML file, with suggestions for unknown keys. */
export function issuesToDiagnostics(
  issues: z.core.$ZodIssue[],
  p: ParsedYaml,
  schema: z.ZodType,
): Diagnostic[] {
  const out: Diagnostic[] = [];
  for (const issue of issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        const known = knownKeys(schema, issue.path);
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

/** A diagnostic for a key path of the document (`path: message`, at where the path is written). */
export function diagnosticAt(p: ParsedYaml, path: PropertyKey[], message: string): Diagnostic {
  return at(p, path, false, `${describePath(path)}: ${message}`);
}

/** Locate a path in the YAML document; for unknown keys point at the key itself. */
function at(p: ParsedYaml, path: PropertyKey[], keyNode: boolean, message: string): Diagnostic {
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
function knownKeys(schema: z.ZodType, path: PropertyKey[]): string[] {
  // biome-ignore lint/suspicious/noExplicitAny: walking zod internals generically
  let s: any = schema;
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
