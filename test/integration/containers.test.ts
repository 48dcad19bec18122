import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { KILN, ours, kiln as run, until as waitUntil } from "./helpers.js";

// Containers for real: a debian:bookworm image bootstrapped into a store of
// the test's own, run under systemd-nspawn.
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-containers-"));
const STORE = join(OUT, "store");

const kiln = (args: string[], input?: string) =>
  run(args, {
    env: { KILN_STORE: STORE },
    ...(input !== undefined ? { input } : {}),
    timeout: 900_000,
  });

afterAll(() => rmSync(OUT, { recursive: true, force: true }));

const leftovers = () =>
  readdirSync(tmpdir()).filter(
    (f) => f.startsWith("kiln-overlay-") || f.startsWith("kiln-run-io-"),
  );

interface Ps {
  name: string;
  image: string;
  status: string;
  exitCode?: number;
  running: boolean;
}
const ps = (all: boolean) =>
  JSON.parse(kiln(["ps", ...(all ? ["-a"] : []), "--json"]).stdout) as Ps[];

const mounted = (under: string) =>
  readFileSync("/proc/self/mountinfo", "utf8").includes(join(STORE, under));

const until = (ok: () => boolean | Promise<boolean>, ms = 30_000) => waitUntil(String(ok), ok, ms);

describe.sequential("kiln pull, images, run, ps, logs, stop, rm, rmi", () => {
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

  it("keeps a container without --rm: ps -a, logs, its changes, a taken name; rm removes it", () => {
    const r = kiln([
      "run",
      "--name",
      "keep1",
      "debian:bookworm",
      "sh",
      "-c",
      "echo hello; echo oops >&2; touch /marker; exit 5",
    ]);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stdout).toBe("hello\n");
    expect(ps(false).map((c) => c.name)).not.toContain("keep1");
    expect(ps(true).find((c) => c.name === "keep1")).toMatchObject({
      status: "exited",
      exitCode: 5,
      image: "debian:bookworm",
      running: false,
    });
    expect(kiln(["ps", "-a"]).stdout).toMatch(
      /keep1\s+debian:bookworm\s+"sh -c echo hello.*Exited \(5\)/,
    );
    const logs = kiln(["logs", "keep1"]).stdout;
    expect(logs).toContain("hello\n");
    expect(logs).toContain("oops\n");
    expect(readdirSync(join(STORE, "containers/keep1/upper"))).toContain("marker");
    const again = kiln(["run", "--name", "keep1", "debian:bookworm", "true"]);
    expect(again.code).toBe(125);
    expect(again.stderr).toContain('Conflict. The container name "keep1" is already in use');
    expect(kiln(["rm", "keep1"]).code).toBe(0);
    expect(existsSync(join(STORE, "containers/keep1"))).toBe(false);
    expect(kiln(["logs", "keep1"]).stderr).toContain("No such container: keep1");
  });

  it("run -d runs in the background; logs -f follows; stop passes SIGTERM on; rm -f ends a running one", async () => {
    const d = kiln([
      "run",
      "-d",
      "--name",
      "bg",
      "debian:bookworm",
      "sh",
      "-c",
      'trap "echo stopping; exit 7" TERM; echo started; while :; do sleep 0.2; done',
    ]);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout).toBe("bg\n");
    await until(() => kiln(["logs", "bg"]).stdout.includes("started"));
    expect(ps(false).find((c) => c.name === "bg")).toMatchObject({ running: true });
    const busy = kiln(["rm", "bg"]);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toContain("You cannot remove a running container bg");
    expect(kiln(["stop", "bg"]).code).toBe(0);
    expect(ps(true).find((c) => c.name === "bg")).toMatchObject({ status: "exited", exitCode: 7 });
    expect(kiln(["logs", "bg"]).stdout).toBe("started\nstopping\n");
    expect(mounted("containers/bg")).toBe(false);

    kiln([
      "run",
      "-d",
      "--name",
      "lines",
      "debian:bookworm",
      "sh",
      "-c",
      "for i in 1 2 3; do echo line$i; sleep 0.5; done",
    ]);
    const followed = kiln(["logs", "-f", "lines"]);
    expect(followed.stdout).toBe("line1\nline2\nline3\n");
    expect(ps(true).find((c) => c.name === "lines")).toMatchObject({ exitCode: 0 });

    expect(
      kiln(["run", "-d", "--boot", "--name", "booted", "debian:bookworm", "sleep", "600"]).code,
    ).toBe(0);
    await until(() => ps(false).some((c) => c.name === "booted"));
    expect(kiln(["rm", "-f", "booted", "bg", "lines"]).code).toBe(0);
    expect(ps(true).map((c) => c.name)).toEqual([]);
    expect(ours("systemd-nspawn", { exact: true })).toEqual([]);
    expect(mounted("containers")).toBe(false);
  });

  it("run -it: Ctrl-C reaches the command; a second Ctrl-C ends the container", async () => {
    const cmd = `${process.execPath} ${KILN} run -it --rm debian:bookworm sh -c 'trap "echo got-INT" INT; echo ready; while :; do sleep 0.2; done'`;
    const child = spawn("script", ["-qfec", cmd, "/dev/null"], {
      env: { ...process.env, KILN_STORE: STORE },
    });
    let out = "";
    child.stdout.on("data", (b) => {
      out += String(b);
    });
    const exited = new Promise<number | null>((res) => child.on("close", res));
    await until(() => out.includes("ready"));
    child.stdin.write("\x03");
    await until(() => out.includes("got-INT"));
    await new Promise((r) => setTimeout(r, 2500));
    // Two seconds on, the command still runs: one Ctrl-C only interrupted it.
    expect(ours("systemd-nspawn", { exact: true })).not.toEqual([]);
    child.stdin.write("\x03");
    await new Promise((r) => setTimeout(r, 300));
    child.stdin.write("\x03");
    const code = await Promise.race([
      exited,
      new Promise((r) => setTimeout(() => r("hung"), 20_000)),
    ]);
    expect(code).not.toBe("hung");
    expect(out).toContain("second Ctrl-C, ending the container");
    expect(ours("systemd-nspawn", { exact: true })).toEqual([]);
    expect(ps(true)).toEqual([]);
  });

  it("round trip through a registry: outputs [oci] pushed with skopeo, pulled with docker://, run", async () => {
    const build = kiln([
      "build",
      "examples/container.yaml",
      "-o",
      join(OUT, "container"),
      "--json",
    ]);
    expect(build.code, build.stderr).toBe(0);
    const manifest = JSON.parse(build.stdout) as {
      manifest: { artifacts: { format: string; path: string }[] };
    };
    expect(manifest.manifest.artifacts.map((a) => a.format)).toEqual(["oci"]);
    const layout = join(OUT, "container", "container.oci");
    const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")) as {
      manifests: { annotations: Record<string, string> }[];
    };
    expect(
      index.manifests.map((m) => m.annotations["org.opencontainers.image.ref.name"]).sort(),
    ).toEqual(["1.0.0", "latest"]);
    // A container-only spec gets no kernel.
    expect(JSON.stringify(manifest)).not.toMatch(/linux-image/);

    const port = 20000 + Math.floor(Math.random() * 20000);
    const config = join(OUT, "registry.yml");
    writeFileSync(
      config,
      `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${join(OUT, "registry")}\nhttp:\n  addr: 127.0.0.1:${port}\n`,
    );
    const registry = spawn("docker-registry", ["serve", config], { stdio: "ignore" });
    try {
      await until(
        async () =>
          (await fetch(`http://127.0.0.1:${port}/v2/`).catch(() => undefined))?.ok === true,
      );
      const push = spawnSync(
        "skopeo",
        [
          "copy",
          "--dest-tls-verify=false",
          `oci:${layout}:latest`,
          `docker://127.0.0.1:${port}/kiln/container:1.0.0`,
        ],
        { encoding: "utf8" },
      );
      expect(push.status, push.stderr).toBe(0);
      const image = `127.0.0.1:${port}/kiln/container:1.0.0`;
      const pull = kiln(["pull", `docker://${image}`]);
      expect(pull.code, pull.stderr).toBe(0);
      const run = kiln([
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        "cat /etc/kiln-release; curl --version | head -c 5",
      ]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toBe("container 1.0.0, built by kiln\ncurl ");
      // With no command, the image's own (bash) runs, as with docker.
      expect(kiln(["run", "--rm", "-i", image], "echo from-default-cmd\n").stdout).toBe(
        "from-default-cmd\n",
      );
      const missing = kiln(["pull", `docker://127.0.0.1:${port}/kiln/nosuch:1`]);
      expect(missing.code).not.toBe(0);
      expect(missing.stderr).toContain(`cannot pull docker://127.0.0.1:${port}/kiln/nosuch:1`);
      const local = kiln(["pull", `oci:${layout}:1.0.0`]);
      expect(local.code, local.stderr).toBe(0);
      expect(kiln(["run", "--rm", "container:1.0.0", "cat", "/etc/kiln-release"]).stdout).toContain(
        "container 1.0.0",
      );
      expect(kiln(["rmi", image, "container:1.0.0"]).code).toBe(0);
    } finally {
      registry.kill();
    }
  });

  it("--rm leaves no overlay, relay, process or store entry behind; rmi removes the image", () => {
    expect(leftovers()).toEqual([]);
    expect(ours("systemd-nspawn", { exact: true })).toEqual([]);
    expect(readdirSync(join(STORE, "images"))).toEqual(["debian"]);
    expect(readdirSync(join(STORE, "tmp"))).toEqual([]);
    expect(readdirSync(join(STORE, "containers"))).toEqual([]);
    expect(kiln(["rmi", "debian:bookworm"]).code).toBe(0);
    expect(JSON.parse(kiln(["images", "--json"]).stdout)).toEqual([]);
  });
});
