import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { RETRY_LOG } from "./helpers.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** Where images built once per run live (see sharedBuild in helpers.ts). */
    sharedBuilds: string;
  }
}

let shared = "";

// Vitest global setup for the integration project: a directory for the images
// several files share, and a count of the emulator-fault retries of the run.
export function setup(project: TestProject): void {
  rmSync(RETRY_LOG, { force: true });
  shared = mkdtempSync(join(tmpdir(), "kiln-it-shared-"));
  project.provide("sharedBuilds", shared);
}

export function teardown(): void {
  if (shared) rmSync(shared, { recursive: true, force: true });
  const lines = existsSync(RETRY_LOG) ? readFileSync(RETRY_LOG, "utf8").trim().split("\n") : [];
  const n = lines.filter(Boolean).length;
  console.log(`\nemulator-fault retries in this run: ${n}`);
  for (const l of lines.filter(Boolean)) console.log(`  ${l}`);
}
