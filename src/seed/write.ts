import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rename, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Spec } from "../config/schema.js";
import { seedIso } from "../image/cidata.js";
import { type Credential, writeCredentials } from "../util/credentials.js";
import { KilnError } from "../util/errors.js";
import { removeTree } from "../util/fsx.js";
import { autoinstall } from "./autoinstall.js";
import { ignition, validateIgnition } from "./ignition.js";
import { noCloudSeed } from "./nocloud.js";
import { realSecrets, type Secrets, seedAccounts } from "./users.js";
import { validateCloudConfig } from "./validate.js";

export const SEED_FORMATS = ["nocloud-iso", "nocloud-dir", "autoinstall", "ignition"] as const;
export type SeedFormat = (typeof SEED_FORMATS)[number];

/** A seed in memory: file name → content, and the passwords generated for it. */
export interface SeedFiles {
  files: Record<string, string>;
  credentials: Credential[];
}

/** The files of one seed format (the ISO is made from the nocloud-dir files). */
export function seedFiles(spec: Spec, format: SeedFormat, secrets?: Secrets): SeedFiles {
  const acc = seedAccounts(spec, secrets);
  switch (format) {
    case "nocloud-dir":
    case "nocloud-iso":
      return { files: { ...noCloudSeed(spec, acc) }, credentials: acc.credentials };
    case "autoinstall": {
      const userData = autoinstall(spec, acc, secrets ?? realSecrets);
      return {
        files: { "user-data": userData, "meta-data": `instance-id: ${spec.name}-autoinstall\n` },
        credentials: acc.credentials,
      };
    }
    case "ignition":
      return {
        files: { "config.ign": `${JSON.stringify(ignition(spec, acc), null, 2)}\n` },
        credentials: acc.credentials,
      };
  }
}

/** Check a seed with the validator its consumer would use; throws with every problem found. */
export async function validateSeed(
  format: SeedFormat,
  dir: string,
  files: SeedFiles["files"],
): Promise<void> {
  let problems: string[] = [];
  if (format === "ignition") problems = validateIgnition(JSON.parse(files["config.ign"]!));
  else problems = await validateCloudConfig(join(dir, "user-data"));
  if (problems.length)
    throw new KilnError(
      "SEED_INVALID",
      `the generated ${format} seed is invalid:\n  ${problems.join("\n  ")}`,
      {
        hint: "this is a bug in kiln or a value in the spec the seed format cannot carry",
      },
    );
}

/**
 * Write a seed into `outDir` (replaced as a whole only once it is complete
 * and valid), the generated passwords into `outDir/credentials` (0600).
 */
export async function writeSeed(
  spec: Spec,
  format: SeedFormat,
  outDir: string,
): Promise<{ outDir: string; files: string[]; credentials: Credential[] }> {
  const seed = seedFiles(spec, format);
  await mkdir(dirname(outDir), { recursive: true });
  const tmp = await mkdtemp(join(dirname(outDir), `.${basename(outDir)}.kiln-`));
  try {
    const names: string[] = [];
    const src = format === "nocloud-iso" ? join(tmp, "cidata") : tmp;
    await mkdir(src, { recursive: true });
    for (const [name, text] of Object.entries(seed.files)) await writeFile(join(src, name), text);
    await validateSeed(format, src, seed.files);
    if (format === "nocloud-iso") {
      await seedIso(src, tmp);
      await removeTree(src);
      names.push("seed.iso");
    } else names.push(...Object.keys(seed.files));
    if (seed.credentials.length) {
      await writeCredentials(join(tmp, "credentials"), seed.credentials);
      names.push("credentials");
    }
    await chmod(tmp, 0o755);
    if (existsSync(outDir)) await removeTree(outDir);
    await rename(tmp, outDir);
    return { outDir, files: names, credentials: seed.credentials };
  } catch (err) {
    await removeTree(tmp);
    throw err;
  }
}
