import type { Check } from "../config/schema.js";
import { DONE_MARK, RESULT_RE } from "../render/checks.js";

export interface RawResult {
  index: number;
  exit: number;
  stdout: string;
  stderr: string;
}

export interface CheckResult {
  name: string;
  kind: "run" | "unit" | "file" | "port" | "http";
  passed: boolean;
  /** What the check wanted, and what came back, in words. */
  expected: string;
  actual: string;
  /** A run check's stdout (its first 4 KB), e.g. a state it printed for the record. */
  stdout?: string;
}

export function parseResults(consoleText: string): { results: RawResult[]; done: boolean } {
  const results: RawResult[] = [];
  for (const m of consoleText.matchAll(RESULT_RE)) {
    results.push({
      index: Number(m[1]),
      exit: Number(m[2]),
      stdout: Buffer.from(m[3]!, "base64").toString("utf8"),
      stderr: Buffer.from(m[4]!, "base64").toString("utf8"),
    });
  }
  return { results, done: consoleText.includes(DONE_MARK) };
}

export function checkName(c: Check, i: number): string {
  if (c.name) return c.name;
  if (c.run !== undefined) return `run: ${c.run}`;
  if (c.unit !== undefined) return `unit ${c.unit} active`;
  if (c.file !== undefined) return `file ${c.file} exists`;
  if (c.port !== undefined) return `port ${c.port} listening`;
  return `http ${c.http ?? `#${i}`}`;
}

/** Hold each raw result against what the spec expects. */
export function evaluate(checks: Check[], raw: RawResult[]): CheckResult[] {
  return checks.map((c, i) => {
    const name = checkName(c, i);
    const r = raw.find((x) => x.index === i);
    const kind =
      c.run !== undefined
        ? "run"
        : c.unit !== undefined
          ? "unit"
          : c.file !== undefined
            ? "file"
            : c.port !== undefined
              ? "port"
              : "http";
    if (!r)
      return {
        name,
        kind,
        passed: false,
        expected: "a result",
        actual: "no result came back (the check did not finish)",
      };
    const out = r.stdout.trim();
    switch (kind) {
      case "run": {
        const wantExit = c.exit ?? 0;
        const problems: string[] = [];
        if (r.exit !== wantExit) problems.push(`exit ${r.exit}`);
        if (c.stdout !== undefined && !new RegExp(c.stdout, "m").test(r.stdout))
          problems.push(`stdout ${JSON.stringify(clip(r.stdout))}`);
        if (c.stderr !== undefined && !new RegExp(c.stderr, "m").test(r.stderr))
          problems.push(`stderr ${JSON.stringify(clip(r.stderr))}`);
        const expected = [
          `exit ${wantExit}`,
          ...(c.stdout !== undefined ? [`stdout /${c.stdout}/`] : []),
          ...(c.stderr !== undefined ? [`stderr /${c.stderr}/`] : []),
        ].join(", ");
        const actual = problems.length ? problems.join(", ") : `exit ${r.exit}`;
        return {
          name,
          kind,
          passed: problems.length === 0,
          expected,
          actual:
            problems.length && r.stderr && c.stderr === undefined
              ? `${actual}; stderr ${JSON.stringify(clip(r.stderr))}`
              : actual,
          ...(r.stdout ? { stdout: r.stdout.slice(0, 4096) } : {}),
        };
      }
      case "unit":
        return { name, kind, passed: r.exit === 0, expected: "active", actual: out || "unknown" };
      case "file":
        return {
          name,
          kind,
          passed: r.exit === 0,
          expected: "exists",
          actual: r.exit === 0 ? "exists" : "missing",
        };
      case "port":
        return {
          name,
          kind,
          passed: r.exit === 0,
          expected: "listening",
          actual: r.exit === 0 ? "listening" : "not listening after 30s",
        };
      default: {
        const want = c.status ?? 200;
        const got = Number(out);
        return {
          name,
          kind,
          passed: got === want,
          expected: `HTTP ${want}`,
          actual: out ? `HTTP ${out}` : `no answer${r.stderr ? `: ${clip(r.stderr)}` : ""}`,
        };
      }
    }
  });
}

function clip(s: string, n = 200): string {
  const t = s.trim();
  return t.length > n ? `${t.slice(0, n)}…` : t;
}
