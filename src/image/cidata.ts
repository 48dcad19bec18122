import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";

/** A NoCloud seed: an ISO as given, or a directory made into an ISO labelled `cidata`. */
export async function seedIso(seed: string, dir: string): Promise<string> {
  if (!existsSync(seed)) throw new KilnError("VM_NO_SEED", `seed ${seed} does not exist`);
  if (!statSync(seed).isDirectory()) return seed;
  for (const f of ["user-data", "meta-data"]) {
    if (!existsSync(join(seed, f)))
      throw new KilnError("VM_BAD_SEED", `seed directory ${seed} has no ${f}`, {
        hint: "a NoCloud seed needs user-data and meta-data",
      });
  }
  const iso = join(dir, "seed.iso");
  await exec("xorriso", ["-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-r", "-o", iso, seed]);
  return iso;
}
