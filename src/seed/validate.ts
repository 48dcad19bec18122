import { existsSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { KilnError } from "../util/errors.js";
import { exec, which } from "../util/exec.js";
import { log } from "../util/log.js";
import { cacheDir } from "../util/paths.js";

/**
 * cloud-init's own schema check (`cloud-init schema --config-file`). A host
 * with cloud-init installed uses it; otherwise Debian's cloud-init package
 * is unpacked into kiln's cache and run by the host's Python, so the host
 * never gets cloud-init's boot services.
 */
async function cloudInitCommand(): Promise<{
  cmd: string;
  args: string[];
  env: Record<string, string>;
}> {
  if (await which("cloud-init")) return { cmd: "cloud-init", args: [], env: {} };
  const dir = cacheDir("cloud-init");
  const lib = join(dir, "root/usr/lib/python3/dist-packages");
  if (!existsSync(join(lib, "cloudinit"))) {
    log.info("fetching Debian's cloud-init package for its schema check (once)");
    await mkdir(dir, { recursive: true });
    const tmp = await mkdtemp(join(dir, ".fetch-"));
    try {
      await exec("apt-get", ["download", "cloud-init"], {
        cwd: tmp,
        hint: "kiln validates user-data with Debian's cloud-init package; `apt-get update` may help",
      });
      const deb = readdirSync(tmp).find((f) => f.endsWith(".deb"));
      if (!deb)
        throw new KilnError("SEED_VALIDATOR", "apt-get download cloud-init gave no package");
      await exec("dpkg-deb", ["-x", join(tmp, deb), join(tmp, "root")]);
      await rm(join(dir, "root"), { recursive: true, force: true });
      await rename(join(tmp, "root"), join(dir, "root"));
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }
  // The distribution's Python, whose modules cloud-init needs (not a pyenv or venv one first on PATH).
  return {
    cmd: "/usr/bin/python3",
    args: ["-m", "cloudinit.cmd.main"],
    env: { PYTHONPATH: lib },
  };
}

/** Errors cloud-init finds in a cloud-config file; empty when valid. */
export async function validateCloudConfig(file: string): Promise<string[]> {
  const c = await cloudInitCommand();
  const r = await exec(c.cmd, [...c.args, "schema", "--config-file", file], {
    env: c.env,
    okCodes: [0, 1],
  });
  if (r.code === 0) return [];
  const text = `${r.stdout}\n${r.stderr}`;
  const missing = /No module named '([^']+)'/.exec(text);
  if (missing)
    throw new KilnError(
      "SEED_VALIDATOR",
      `cloud-init's schema check needs Python module ${missing[1]}`,
      {
        hint: "install what it needs with `kiln doctor --install`",
      },
    );
  const errors = /schema errors: (.*)/.exec(text);
  return errors ? splitErrors(errors[1]!) : [text.trim()];
}

/** "a: x, b: y" (cloud-init's one-line list) into lines; commas inside values are rare enough. */
function splitErrors(line: string): string[] {
  return [...new Set(line.split(/, (?=[\w.]+: )/).map((s) => s.trim()))];
}
