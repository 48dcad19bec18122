import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

// Containers for real: a debian:bookworm image bootstrapped into a store of
// the test's own, run under systemd-nspawn.
const ROOT = resolve(import.meta.dirname, "../..");
const KILN = join(ROOT, "bin/kiln.js");
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-containers-"));
const STORE = join(OUT, "store");

function kiln(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [KILN, ...args], {
    cwd: ROOT,
    encoding: "utf8",
    input: input ?? "",
    timeout: 900_000,
    env: { ...process.env, KILN_STORE: STORE },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

afterAll(() => rmSync(OUT, { recursive: true, force: true }));

const leftovers = () =>
  readdirSync(tmpdir()).filter(
    (f) => f.startsWith("kiln-overlay-") || f.startsWith("kiln-run-io-"),
  );

describe.sequential("kiln pull, images, run, rmi", () => {
  it("pulls debian:bookworm into the store and lists it", () => {
    const r = kiln(["pull", "debian:bookworm"]);
    expect(r.code, r.stderr).toBe(0);
    const images = JSON.parse(kiln(["images", "--json"]).stdout) as {
      name: string;
      tag: string;
      bytes: number;
    }[];
    expect(images).toMatchObject([{ name: "debian", tag: "bookworm" }]);
    expect(images[0]!.bytes).toBeGreaterThan(50 * 2 ** 20);
    expect(kiln(["pull", "debian:bookworm"]).stdout).toContain("image is up to date");
  });

  it("passes the exit status through", () => {
    expect(kiln(["run", "--rm", "debian:bookworm", "sh", "-c", "exit 3"]).code).toBe(3);
  });

  it("pipes stdin with -i, and gives a terminal with -t", () => {
    expect(
      kiln(["run", "-i", "--rm", "debian:bookworm", "tr", "a-z", "A-Z"], "hello\n").stdout,
    ).toBe("HELLO\n");
    // Without -i the command reads an empty stdin, as with docker.
    expect(kiln(["run", "--rm", "debian:bookworm", "cat"], "ignored\n").stdout).toBe("");
    const cmd = `${process.execPath} ${KILN} run -t --rm debian:bookworm sh -c 'test -t 0 && test -t 1 && echo on-a-tty'`;
    const r = spawnSync("script", ["-qfec", cmd, "/dev/null"], {
      encoding: "utf8",
      env: { ...process.env, KILN_STORE: STORE },
    });
    expect(r.stdout).toContain("on-a-tty");
  });

  it("sets environment, volumes and the working directory", () => {
    const data = join(OUT, "data");
    rmSync(data, { recursive: true, force: true });
    spawnSync("mkdir", [data]);
    writeFileSync(join(data, "file"), "from the host\n");
    const r = kiln([
      "run",
      "--rm",
      "-e",
      "GREETING=hi there",
      "-v",
      `${data}:/data:ro`,
      "-w",
      "/data",
      "debian:bookworm",
      "sh",
      "-c",
      'echo "$GREETING"; cat file; pwd; touch new 2>/dev/null || echo read-only',
    ]);
    expect(r.stdout).toBe("hi there\nfrom the host\n/data\nread-only\n");
  });

  it("--boot runs systemd as PID 1 and the command as a unit, passing its status on", () => {
    const r = kiln([
      "run",
      "--rm",
      "--boot",
      "debian:bookworm",
      "sh",
      "-c",
      "cat /proc/1/comm; exit 4",
    ]);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stdout).toBe("systemd\n");
  });

  it("fails as docker does: unknown image, missing executable, missing volume source", () => {
    const noImage = kiln(["run", "--rm", "debian:nosuch", "true"]);
    expect(noImage.code).toBe(125);
    expect(noImage.stderr).toContain("Unable to find image 'debian:nosuch' locally");
    expect(noImage.stderr).toContain("kiln pull debian:nosuch");
    const noExe = kiln(["run", "--rm", "debian:bookworm", "no-such-tool"]);
    expect(noExe.code).toBe(127);
    expect(noExe.stderr).toContain('exec: "no-such-tool": executable file not found in $PATH');
    const noVol = kiln(["run", "--rm", "-v", "/no/such/dir:/x", "debian:bookworm", "true"]);
    expect(noVol.code).toBe(125);
    expect(noVol.stderr).toContain("bind source path does not exist: /no/such/dir");
  });

  it("probe installs nginx on bookworm and trixie and fetches its page; a wrong expectation fails", () => {
    expect(kiln(["pull", "debian:trixie"]).code).toBe(0);
    const junit = join(OUT, "probe.xml");
    const ok = kiln([
      "probe",
      "nginx",
      "--on",
      "debian:bookworm,debian:trixie",
      "--service",
      "nginx.service",
      "--port",
      "80",
      "--http",
      "http://localhost/",
      "--expect",
      "200",
      "--json",
    ]);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    const j = JSON.parse(ok.stdout) as {
      ok: boolean;
      images: { target: string; version?: string }[];
    };
    expect(j.ok).toBe(true);
    expect(j.images.map((i) => i.target)).toEqual(["debian:bookworm", "debian:trixie"]);
    for (const i of j.images) expect(i.version).toMatch(/^1\.\d+/);
    const body = kiln([
      "probe",
      "nginx",
      "--on",
      "debian:bookworm",
      "--http",
      "http://localhost/",
      "--expect",
      "/Welcome to nginx/",
    ]);
    expect(body.code, body.stdout + body.stderr).toBe(0);
    const bad = kiln([
      "probe",
      "nginx",
      "--on",
      "debian:bookworm",
      "--http",
      "http://localhost/",
      "--expect",
      "404",
      "--junit",
      junit,
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/http http:\/\/localhost\/\s+FAILED: expected 404, got HTTP 200/);
    expect(readFileSync(junit, "utf8")).toContain(
      '<failure message="expected 404, got HTTP 200"/>',
    );
    expect(kiln(["rmi", "debian:trixie"]).code).toBe(0);
  });

  it("--rm leaves no overlay, relay, process or store entry behind; rmi removes the image", () => {
    expect(leftovers()).toEqual([]);
    expect(spawnSync("pgrep", ["-x", "systemd-nspawn"]).status).toBe(1);
    expect(readdirSync(join(STORE, "images"))).toEqual(["debian"]);
    expect(readdirSync(join(STORE, "tmp"))).toEqual([]);
    expect(kiln(["rmi", "debian:bookworm"]).code).toBe(0);
    expect(JSON.parse(kiln(["images", "--json"]).stdout)).toEqual([]);
  });
});
