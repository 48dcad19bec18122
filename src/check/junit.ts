import type { BootBreakdown } from "../runtime/console.js";
import type { CheckResult } from "./evaluate.js";

export interface TargetReport {
  target: string;
  ready: boolean;
  readySeconds: number | null;
  /** Where the seconds to ready went. */
  breakdown?: BootBreakdown;
  bootError?: string;
  /** Ready, but the checks did not all report back: why, with the console's last lines. */
  checksError?: string;
  results: CheckResult[];
}

/** JUnit XML: one testsuite per boot target, one testcase per check; a failed boot is an error. */
export function junitXml(suiteName: string, reports: TargetReport[]): string {
  const esc = (s: string) =>
    s
      .replace(
        /[<>&"']/g,
        (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!,
      )
      // biome-ignore lint/suspicious/noControlCharactersInRegex: XML 1.0 forbids these characters
      .replace(/[\x00-\x08\x0b\x0c\x0e-\x1f]/g, "");
  const out = ['<?xml version="1.0" encoding="UTF-8"?>', `<testsuites name="${esc(suiteName)}">`];
  for (const r of reports) {
    const failures = r.results.filter((c) => !c.passed).length;
    const errors = r.ready ? 0 : 1;
    out.push(
      `  <testsuite name="${esc(`${suiteName} on ${r.target}`)}" tests="${r.results.length + (r.ready ? 0 : 1)}" failures="${failures}" errors="${errors}" time="${r.readySeconds ?? 0}">`,
    );
    if (!r.ready) {
      out.push(
        `    <testcase classname="${esc(r.target)}" name="boot"><error message="${esc(r.bootError ?? "boot failed")}"/></testcase>`,
      );
    }
    for (const c of r.results) {
      out.push(`    <testcase classname="${esc(r.target)}" name="${esc(c.name)}">`);
      if (!c.passed)
        out.push(`      <failure message="${esc(`expected ${c.expected}, got ${c.actual}`)}"/>`);
      out.push("    </testcase>");
    }
    out.push("  </testsuite>");
  }
  out.push("</testsuites>", "");
  return out.join("\n");
}
