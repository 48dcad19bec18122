import { spawnSync } from "node:child_process";
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { inject } from "vitest";

/** What every integration file shares: how to run kiln, how to wait, and the retry count. */
export const ROOT = resolve(import.meta.dirname, "../..");
export const KILN = join(ROOT, "bin/kiln.js");

/** Emulator-fault retries of this run, one a line (the global setup prints the count at the end). */
export const RETRY_LOG = process.env.KILN_TEST_RETRY_LOG ?? join(tmpdir(), "kiln-test-retries.log");

export interface KilnRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Run the built CLI (dist/) from the checkout, output captured. A boot that
 * kiln booted again after an emulator fault is reported here and counted,
 * so flakiness shows up in the test output rather than hiding in a pass.
 */
export function kiln(
  args: string[],
  o: { env?: Record<string, string>; input?: string; timeout?: number } = {},
): KilnRun {
  const r = spawnSync(process.execPath, [KILN, ...args], {
    cwd: ROOT,
    encoding: "utf8",
    input: o.input ?? "",
    timeout: o.timeout ?? 1_200_000,
    env: { ...process.env, ...o.env },
    maxBuffer: 256 * 1024 * 1024,
  });
  noteRetries(`kiln ${args.join(" ")}`, r.stderr ?? "");
  return { code: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

/** Record the "booting again" warnings kiln printed (see emulatorFault in src/runtime/qemu.ts). */
export function noteRetries(what: string, stderr: string): void {
  for (const line of stderr.split("\n")) {
    if (!line.includes("not the image's fault; booting again")) continue;
    console.warn(`emulator fault, booted again (${what.slice(0, 120)}): ${line.trim()}`);
    appendFileSync(RETRY_LOG, `${what.slice(0, 200)}\t${line.trim()}\n`);
  }
}

/**
 * The pids of processes matching `pgrep -f pattern` (or `-x name` with
 * exact) that this test file started: they carry its KILN_IT_FILE marker
 * (set by isolate.ts) in their environment, so a file never counts the
 * processes of the file running beside it.
 */
export function ours(pattern: string, o: { exact?: boolean } = {}): number[] {
  const marker = `KILN_IT_FILE=${process.env.KILN_IT_FILE}`;
  const r = spawnSync("pgrep", [o.exact ? "-x" : "-f", pattern], { encoding: "utf8" });
  return r.stdout
    .split("\n")
    .filter(Boolean)
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/environ`, "latin1").split("\0").includes(marker);
      } catch {
        return false; // gone already
      }
    });
}

/** Poll until `ok` holds, or fail naming what was awaited. */
export async function until(
  what: string,
  ok: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  stepMs = 200,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/**
 * The output directory of a spec built once for the whole run (files that
 * only use an image, rather than test its build, share it). Treat it as
 * read-only: copy before changing anything.
 */
export function sharedBuild(spec: string): string {
  const out = join(inject("sharedBuilds"), basename(spec).replace(/\.ya?ml$/, ""));
  if (existsSync(join(out, "manifest.json"))) return out;
  // Two files may ask at once: the first builds under the lock, the second waits and reuses it.
  const b = spawnSync(
    "flock",
    [
      `${out}.lock`,
      "sh",
      "-c",
      'test -e "$1/manifest.json" || exec "$2" "$3" build "$4" -o "$1"',
      "sh",
      out,
      process.execPath,
      KILN,
      spec,
    ],
    { cwd: ROOT, encoding: "utf8", timeout: 1_800_000, maxBuffer: 256 * 1024 * 1024 },
  );
  noteRetries(`kiln build ${spec}`, b.stderr ?? "");
  if (b.status !== 0) throw new Error(`kiln build ${spec} failed:\n${b.stderr}`);
  return out;
}
