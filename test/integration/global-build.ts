import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";

/**
 * Integration tests run bin/kiln.js, which loads dist/: build it from the
 * sources first, so a stale dist/ can never pass (or fail) in their place.
 */
export default function buildDist(): void {
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], { stdio: "inherit" });
}
