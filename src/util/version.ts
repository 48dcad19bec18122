import { readFileSync } from "node:fs";

/** kiln's own version, read from package.json (from src/ and dist/ alike) so it is written once. */
export const KILN_VERSION: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  }
).version;
