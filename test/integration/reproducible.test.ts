import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { KILN, kiln, ROOT } from "./helpers.js";

// examples/minimal.yaml with a fixed password hash, locked, then built twice:
// each build from an empty kiln cache, into another path, with another TMPDIR,
// the second one three days in the future (libfaketime: the clock only, so
// what files say about themselves stays true).
const WORK = mkdtempSync(join(tmpdir(), "kiln-repro-"));
const SPEC = join(WORK, "spec", "repro.yaml");
const LOCK = `${SPEC}.lock`;

interface Manifest {
  artifacts: { format: string; path: string; sha256: string }[];
  contents: string;
  reproducible: { sourceDateEpoch: number; differs: string[] };
  root: { lock: { file: string; packages: number } };
}
const manifest = (dir: string): Manifest =>
  JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));

function writeSpec(motd: string): void {
  const base = readFileSync(join(ROOT, "test/integration/specs/reproducible.yaml"), "utf8");
  writeFileSync(
    SPEC,
    `${base.replace(/^extends: .*$/m, `extends: ${join(ROOT, "examples/minimal.yaml")}`)}files:\n  - { path: /etc/motd, content: "${motd}\\n", mode: "0644" }\n`,
  );
}

/** kiln build with its own empty cache, temporary directory and (optionally) a shifted clock. */
function build(name: string, o: { cache: string; clock?: string }) {
  const tmp = join(WORK, `tmp-${name}`);
  mkdirSync(tmp, { recursive: true });
  const out = join(WORK, "out", name, "minimal");
  const argv = [process.execPath, KILN, "build", SPEC, "-o", out];
  const cmd = o.clock ? ["faketime", "-f", o.clock, ...argv] : argv;
  const r = spawnSync(cmd[0]!, cmd.slice(1), {
    cwd: tmp,
    encoding: "utf8",
    timeout: 1_200_000,
    env: { ...process.env, KILN_CACHE: o.cache, TMPDIR: tmp, NO_FAKE_STAT: "1" },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { code: r.status, stderr: r.stderr ?? "", stdout: r.stdout ?? "", out };
}

let a: ReturnType<typeof build>;
let b: ReturnType<typeof build>;
const cacheA = join(WORK, "cache-a");

beforeAll(() => {
  mkdirSync(join(WORK, "spec"), { recursive: true });
  writeSpec("built by kiln");
  const l = kiln(["lock", SPEC, "--json"]);
  if (l.code !== 0) throw new Error(`kiln lock failed:\n${l.stderr}`);
  a = build("a", { cache: cacheA });
  if (a.code !== 0) throw new Error(`build a failed:\n${a.stderr}`);
  b = build("b", { cache: join(WORK, "cache-b"), clock: "+3d" });
  if (b.code !== 0) throw new Error(`build b failed:\n${b.stderr}`);
}, 2_400_000);

describe("locked, bit-identical builds", () => {
  it("kiln lock names every package with its version, .deb sha256 and the builds' time", () => {
    const lock = JSON.parse(readFileSync(LOCK, "utf8"));
    const ssh = lock.packages.find((p: { name: string }) => p.name === "openssh-server");
    expect(ssh.version).toMatch(/^1:9\.2p1/);
    expect(ssh.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(ssh.url).toMatch(
      /^http:\/\/deb\.debian\.org\/debian(-security)?\/pool\/main\/o\/openssh\//,
    );
    expect(lock.sourceDateEpoch).toBe(
      Math.floor(Math.max(...lock.suites.map((s: { date: string }) => Date.parse(s.date))) / 1000),
    );
    expect(manifest(a.out).root.lock.packages).toBe(lock.packages.length);
    const update = kiln(["lock", "--update", SPEC]);
    expect(update.code, update.stderr).toBe(0);
    expect(update.stdout).toContain("no package changed");
    const again = kiln(["lock", SPEC, "--json"]);
    expect(again.code).toBe(1);
    expect(JSON.parse(again.stdout).error.code).toBe("LOCK_EXISTS");
  });

  it("two builds from empty caches, other paths and another clock: every artifact the same bytes", () => {
    const ma = manifest(a.out);
    const mb = manifest(b.out);
    expect(ma.artifacts.map((x) => x.format).sort()).toEqual(["directory", "disk", "qcow2"]);
    for (const x of ma.artifacts) {
      const y = mb.artifacts.find((r) => r.format === x.format)!;
      expect(y.sha256, `${x.format} ${x.path}`).toBe(x.sha256);
    }
    expect(readFileSync(join(b.out, mb.contents), "utf8")).toBe(
      readFileSync(join(a.out, ma.contents), "utf8"),
    );
    expect(ma.reproducible.differs).toEqual([]);
    const d = kiln(["diff", a.out, b.out]);
    expect(d.stdout).toContain("the builds are identical");
    expect(d.code).toBe(0);
  });

  it("a rebuild with nothing changed keeps the output as it is", () => {
    const before = manifest(a.out);
    const r = kiln(["build", SPEC, "-o", a.out, "--json"], { env: { KILN_CACHE: cacheA } });
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.upToDate).toBe(true);
    expect(manifest(a.out)).toEqual(before);
  });

  it("kiln diff names exactly the one file that changed in the spec", () => {
    writeSpec("built by kiln, changed");
    const c = build("c", { cache: cacheA });
    expect(c.code, c.stderr).toBe(0);
    const d = kiln(["diff", a.out, c.out, "--json"]);
    expect(d.code).toBe(1);
    const r = JSON.parse(d.stdout);
    expect(r.files.map((f: { path: string }) => f.path)).toEqual(["/etc/motd"]);
    expect(r.packages).toEqual([]);
    expect(r.artifacts.find((x: { format: string }) => x.format === "disk").same).toBe(false);
  });
});

describe("a lock kiln refuses", () => {
  const variant = (name: string, edit: (lock: { packages: Record<string, unknown>[] }) => void) => {
    const lock = JSON.parse(readFileSync(LOCK, "utf8"));
    edit(lock);
    const dir = join(WORK, `spec-${name}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "repro.yaml"), readFileSync(SPEC));
    writeFileSync(join(dir, "repro.yaml.lock"), JSON.stringify(lock, null, 2));
    const out = join(WORK, "out", name);
    const roots = () => readdirSync(join(cacheA, "rootfs")).length;
    const before = roots();
    const r = kiln(["build", join(dir, "repro.yaml"), "-o", out, "--json"], {
      env: { KILN_CACHE: cacheA },
    });
    const error = JSON.parse(r.stdout).error as { code: string; message: string; hint: string };
    return { ...r, error, built: existsSync(out), newRoots: roots() - before };
  };

  it("a version the mirror does not have fails before anything is built, naming it", () => {
    const r = variant("gone", (lock) => {
      const p = lock.packages.find((x) => x.name === "base-files")!;
      p.version = "99.0-kiln";
      p.url = String(p.url).replace(/base-files_[^_]+_/, "base-files_99.0-kiln_");
    });
    expect(r.code).toBe(1);
    expect(r.error.code).toBe("LOCK_VERSION_GONE");
    expect(r.error.message).toContain("base-files 99.0-kiln");
    expect(r.error.hint).toMatch(/snapshot.*kiln lock --update/);
    expect(r.built).toBe(false);
    expect(r.newRoots).toBe(0);
  });

  it("a .deb whose sha256 is not the locked one is refused", () => {
    const r = variant("hash", (lock) => {
      const p = lock.packages.find((x) => x.name === "sudo")!;
      p.sha256 = "0".repeat(64);
    });
    expect(r.code).toBe(1);
    expect(r.error.code).toBe("LOCK_HASH_MISMATCH");
    expect(r.error.message).toMatch(/sudo \S+: sha256 [0-9a-f]{64} from http/);
    expect(r.built).toBe(false);
    expect(r.newRoots).toBe(0);
  });

  it("a lock that no longer fits the spec says what changed", () => {
    const dir = join(WORK, "spec-stale");
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, "repro.yaml"),
      readFileSync(SPEC, "utf8").replace("extends:", "packages: [curl]\nextends:"),
    );
    writeFileSync(join(dir, "repro.yaml.lock"), readFileSync(LOCK));
    const r = kiln(["build", join(dir, "repro.yaml"), "-o", join(WORK, "out", "stale"), "--json"]);
    expect(r.code).toBe(1);
    const error = JSON.parse(r.stdout).error;
    expect(error.code).toBe("LOCK_STALE");
    expect(error.message).toContain("the spec now includes curl");
  });
});
