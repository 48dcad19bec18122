import { existsSync, readFileSync, rmSync } from "node:fs";
import { RETRY_LOG } from "./helpers.js";

// Vitest global setup for the integration project: count the emulator-fault
// retries of the whole run and say how many there were.
export function setup(): void {
  rmSync(RETRY_LOG, { force: true });
}

export function teardown(): void {
  const lines = existsSync(RETRY_LOG) ? readFileSync(RETRY_LOG, "utf8").trim().split("\n") : [];
  const n = lines.filter(Boolean).length;
  console.log(`\nemulator-fault retries in this run: ${n}`);
  for (const l of lines.filter(Boolean)) console.log(`  ${l}`);
}
