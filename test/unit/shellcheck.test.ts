import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "../..");

/** Sourced files carry no shebang; the shell that sources them decides. */
const SOURCED: Record<string, "sh" | "bash"> = {
  "assets/kiln-test/probes.sh": "bash",
  "scripts/node-env": "sh",
};
/** Not shell: unit files and configuration. */
const NOT_SHELL = /\.(service|conf)$/;

function files(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => relative(root, join(e.parentPath, e.name)));
}

/** The dialect a file is written in, from its shebang (busybox's ash is checked as POSIX sh). */
function dialect(file: string): "sh" | "bash" | undefined {
  const first = readFileSync(join(root, file), "utf8").split("\n", 1)[0]!;
  if (/^#!\s*\S*\/(env )?bash\b/.test(first)) return "bash";
  if (/^#!\s*(\/bin\/sh|\/bin\/busybox sh|\/usr\/bin\/env sh)\b/.test(first)) return "sh";
  return SOURCED[file];
}

describe("shell code", () => {
  // Every shell file kiln ships into images or runs on the host, in one place,
  // so a new one cannot be left out; a missing shellcheck fails, never passes.
  it("is shellcheck-clean, in the dialect its shebang names", () => {
    const scripts = [...files("assets"), ...files("scripts"), ".ci/run"].filter(
      (f) => !NOT_SHELL.test(f),
    );
    const problems: string[] = [];
    for (const f of scripts) {
      const shell = dialect(f);
      if (!shell) {
        problems.push(`${f}: no shebang naming sh or bash (add it, or list it in SOURCED)`);
        continue;
      }
      const r = spawnSync("shellcheck", ["-x", "-s", shell, f], { cwd: root, encoding: "utf8" });
      expect(r.error, "shellcheck must be installed (scripts/test installs it)").toBeUndefined();
      if (r.status !== 0) problems.push(`${f} (${shell}):\n${r.stdout}${r.stderr}`);
    }
    expect(scripts.length).toBeGreaterThanOrEqual(15);
    expect(problems.join("\n")).toBe("");
  });
});
