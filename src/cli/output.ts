import { InternalError, KilnError, SpecError } from "../util/errors.js";
import { ExecError } from "../util/exec.js";
import { debugEnabled } from "../util/log.js";

/** Print an error for a person (or as JSON) and return the exit status to use. */
export function reportError(err: unknown, json: boolean): number {
  if (json) {
    const e = err instanceof KilnError ? err : undefined;
    process.stdout.write(
      `${JSON.stringify({
        ok: false,
        error: {
          code: e?.code ?? "INTERNAL",
          message: err instanceof Error ? err.message : String(err),
          ...(e?.hint ? { hint: e.hint } : {}),
          ...(err instanceof SpecError
            ? { diagnostics: err.diagnostics.map(({ frame: _f, ...d }) => d) }
            : {}),
        },
      })}\n`,
    );
    return e?.exitCode ?? 70;
  }
  if (err instanceof SpecError) {
    for (const d of err.diagnostics) {
      process.stderr.write(`${d.loc.file}:${d.loc.line}:${d.loc.column}: error: ${d.message}\n`);
      if (d.frame) process.stderr.write(`${d.frame}\n\n`);
    }
    process.stderr.write(
      `${err.diagnostics.length} error${err.diagnostics.length === 1 ? "" : "s"} in spec\n`,
    );
    return err.exitCode;
  }
  if (err instanceof KilnError && !(err instanceof InternalError)) {
    process.stderr.write(`kiln: error: ${err.message}\n`);
    if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
    if (debugEnabled() && err instanceof ExecError) process.stderr.write(`${err.stack}\n`);
    return err.exitCode;
  }
  process.stderr.write(
    `kiln: internal error (a bug in kiln): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  return 70;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Rows as left-aligned columns, the first row being the header. */
export function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows)
    console.log(
      r
        .map((v, c) => v.padEnd(widths[c]!))
        .join("  ")
        .trimEnd(),
    );
}
