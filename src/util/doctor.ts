import { existsSync } from "node:fs";
import { KilnError, ToolMissingError } from "./errors.js";
import { exec, which } from "./exec.js";
import { FORBIDDEN_HOST_PACKAGES, HOST_FILES, HOST_TOOLS, packageFor } from "./tools.js";

export interface ToolStatus {
  name: string;
  pkg: string;
  purpose: string;
  path: string | null;
  version: string | null;
}

export async function toolStatus(): Promise<ToolStatus[]> {
  return Promise.all(
    HOST_TOOLS.map(async (t) => {
      const path = (await which(t.name)) ?? null;
      let version: string | null = null;
      if (path && t.version) {
        try {
          const r = await exec(path, t.version, { okCodes: [0, 1], timeoutMs: 10_000 });
          version = firstVersion(`${r.stdout}\n${r.stderr}`);
        } catch {}
      }
      return { name: t.name, pkg: t.pkg, purpose: t.purpose, path, version };
    }),
  );
}

export function fileStatus(): { path: string; pkg: string; purpose: string; present: boolean }[] {
  return HOST_FILES.map((f) => ({ ...f, present: existsSync(f.path) }));
}

function firstVersion(text: string): string | null {
  const m = /(\d+\.\d+(?:[.~+-][\w.~+-]*)?)/.exec(text);
  return m ? m[1]! : null;
}

/** Fail early, naming the first missing tool and how to get it. */
export async function requireTools(names: string[]): Promise<void> {
  for (const n of names) {
    if (!(await which(n))) throw new ToolMissingError(n, packageFor(n));
  }
}

/** Debian packages for everything missing; never a package that would break the host's DNS. */
export function packagesToInstall(
  tools: ToolStatus[],
  files: ReturnType<typeof fileStatus>,
): string[] {
  const pkgs = new Set<string>();
  for (const t of tools) if (!t.path) pkgs.add(t.pkg);
  for (const f of files) if (!f.present) pkgs.add(f.pkg);
  for (const bad of FORBIDDEN_HOST_PACKAGES) pkgs.delete(bad);
  return [...pkgs].sort();
}

export async function installPackages(pkgs: string[]): Promise<void> {
  if (!pkgs.length) return;
  if (process.getuid?.() !== 0)
    throw new KilnError("DOCTOR_NOT_ROOT", "installing packages needs root", {
      hint: "run `sudo kiln doctor --install`",
    });
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  // Say what is coming before apt's own progress: a minute of silence looks hung.
  process.stderr.write(
    `kiln doctor: installing ${pkgs.length} Debian packages: ${pkgs.join(" ")}\n`,
  );
  await exec("apt-get", ["update"], { env, inherit: true });
  // --no-install-recommends keeps systemd-resolved (a recommend of some of these) off the host.
  await exec("apt-get", ["install", "-y", "--no-install-recommends", ...pkgs], {
    env,
    inherit: true,
  });
}
