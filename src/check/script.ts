import type { Check } from "../spec/schema.js";
import { readAsset } from "../util/assets.js";

/**
 * The guest side of `kiln test`: assets/kiln-test/lib.sh plus one line per
 * check, run by a oneshot unit after multi-user.target in a throw-away boot.
 * Results come back on the console as framed base64 lines.
 */
export const RESULT_RE = /KILN:(\d+):(-?\d+):([A-Za-z0-9+/=]*):([A-Za-z0-9+/=]*):END/g;
export const DONE_MARK = "KILN:DONE:END";

export function testUnit(): string {
  return readAsset("kiln-test/kiln-test.service");
}

export function checkScript(checks: Check[]): string {
  const lines = [readAsset("kiln-test/lib.sh"), "# Checks from the spec:"];
  checks.forEach((c, i) => {
    let body: string;
    if (c.run !== undefined) body = `bash -c ${sq(c.run)} >"$out" 2>"$err" </dev/null`;
    else if (c.unit !== undefined)
      body = `unit_state ${sq(c.unit)} >"$out" 2>"$err"; [ "$(cat "$out")" = active ]`;
    else if (c.file !== undefined) body = `: >"$out"; : >"$err"; test -e ${sq(c.file)}`;
    else if (c.port !== undefined) body = `: >"$out"; : >"$err"; listening ${c.port}`;
    else body = `http_status ${sq(c.http ?? "")} >"$out" 2>"$err"`;
    lines.push(`${body}; report ${i} $?`);
  });
  lines.push("done_marker", "");
  return lines.join("\n");
}

/** Quote for bash single quotes. */
function sq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
