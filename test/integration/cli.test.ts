import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openFleet } from "../../src/fleet/open.js";
import { running } from "../../src/util/proc.js";
import { KILN, until } from "./helpers.js";

// bin/kiln.js as scripts and terminals meet it: no image is built or booted here.
const TMP = mkdtempSync(join(tmpdir(), "kiln-it-cli-"));

afterAll(() => rmSync(TMP, { recursive: true, force: true }));

describe("kiln on a pipe", () => {
  it("writes a --json answer longer than a pipe holds whole before it exits", async () => {
    const db = join(TMP, "machines.sqlite");
    const d = await openFleet(db);
    for (let i = 0; i < 300; i++) {
      const mac = `52:54:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
      await d.recordBoot({
        machine: mac,
        facts: { mac, serial: `SERIAL-${i}` },
        group: "web",
        profile: "base",
        artifact: null,
        server: "test",
      });
    }
    await d.close();
    // A shell pipe (64 KiB), as `| jq` gets; spawnSync's own stdout is a socket pair, which holds more.
    const r = spawnSync(
      "bash",
      [
        "-o",
        "pipefail",
        "-c",
        '"$0" "$1" machines --db "$2" --json | cat',
        process.execPath,
        KILN,
        db,
      ],
      { encoding: "utf8" },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(65536);
    expect(JSON.parse(r.stdout)).toHaveLength(300);
  });

  it("answers in JSON only for the verb's own --json, not one inside a container command", () => {
    const env = { ...process.env, KILN_CACHE: join(TMP, "cache") };
    const inner = spawnSync(process.execPath, [KILN, "run", "--rm", "nosuch:1", "echo", "--json"], {
      encoding: "utf8",
      env,
    });
    expect(inner.stdout).toBe("");
    expect(inner.stderr).toContain("kiln: error: Unable to find image 'nosuch:1'");
    const own = spawnSync(process.execPath, [KILN, "images", "--json"], { encoding: "utf8", env });
    expect(JSON.parse(own.stdout)).toEqual([]);
  });
});

describe("kiln vm whose terminal vanishes", () => {
  it("cleans up after SIGHUP as after SIGINT and SIGTERM", async () => {
    // QEMU's stand-in: a foreground program the hang-up ends, as it ends QEMU.
    const bin = join(TMP, "bin");
    const scratch = join(TMP, "scratch");
    for (const d of [bin, scratch]) spawnSync("mkdir", ["-p", d]);
    const qemu = join(bin, "qemu-system-x86_64");
    const pidFile = join(TMP, "qemu.pid");
    writeFileSync(qemu, `#!/bin/sh\necho $$ >${pidFile}\nexec sleep 600\n`);
    chmodSync(qemu, 0o755);
    const disk = join(TMP, "empty.qcow2");
    writeFileSync(disk, "");
    // script(1) gives kiln a terminal of its own; killing script closes it,
    // and the kernel hangs up kiln's process group, as a closed tmux pane does.
    const term = spawn(
      "script",
      [
        "-qfec",
        `exec ${process.execPath} ${KILN} vm ${disk} --firmware bios --accel tcg`,
        "/dev/null",
      ],
      {
        env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, TMPDIR: scratch },
        stdio: "pipe",
      },
    );
    const vmDirs = () => readdirSync(scratch).filter((f) => f.startsWith("kiln-vm-"));
    const stubRunning = () => existsSync(pidFile) && running(Number(readFileSync(pidFile, "utf8")));
    try {
      await until("kiln vm to start its VM", () => vmDirs().length === 1 && stubRunning(), 20_000);
      term.kill("SIGKILL");
      await until("the scratch directory to go", () => vmDirs().length === 0, 15_000);
    } finally {
      term.kill("SIGKILL");
    }
    expect(vmDirs()).toEqual([]);
    expect(stubRunning()).toBe(false);
  });
});
