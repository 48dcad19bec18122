import { readFileSync } from "node:fs";

/** A file from assets/ (what goes into images and test boots). */
export function readAsset(name: string): string {
  return readFileSync(new URL(`../../assets/${name}`, import.meta.url), "utf8");
}
