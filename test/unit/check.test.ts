import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { evaluate, parseResults } from "../../src/check/evaluate.js";
import { junitXml } from "../../src/check/junit.js";
import { checksUnfinished, targetsFor, testInjection } from "../../src/check/run.js";
import { specSchema } from "../../src/config/schema.js";
import { checkScript } from "../../src/render/checks.js";
import { initrdWith } from "../../src/runtime/ephemeral.js";

const checks = specSchema.parse({
  name: "c",
  tests: [
    { run: "echo hi; exit 2", exit: 2, stdout: "^hi$" },
    { unit: "ssh.service" },
    { file: "/etc/it's here" },
    { port: 22 },
    { http: "http://127.0.0.1:8080/x", status: 204 },
  ],
}).tests;

const b64 = (s: string) => Buffer.from(s).toString("base64");

describe("guest check script", () => {
  it("is shellcheck-clean bash", () => {
    const dir = mkdtempSync(join(tmpdir(), "kiln-unit-"));
    try {
      const f = join(dir, "checks.sh");
      writeFileSync(f, checkScript(checks));
      const r = spawnSync("shellcheck", ["-s", "bash", f], { encoding: "utf8" });
      expect(r.error, "shellcheck must be installed (scripts/test installs it)").toBeUndefined();
      expect(r.stdout).toBe("");
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("really runs: a run check reports its exit and output through the framing", () => {
    // Only run checks can execute on a build host; the console is replaced by stdout.
    const script = checkScript([checks[0]!]).replaceAll(">/dev/console", ">&1");
    const out = execFileSync("bash", ["-c", script]).toString();
    const { results, done } = parseResults(out);
    expect(done).toBe(true);
    expect(out).toContain("KILN:START:END");
    expect(results).toEqual([{ index: 0, exit: 2, stdout: "hi\n", stderr: "" }]);
  });
});

describe("evaluation", () => {
  it("passes and fails with what was expected and what came back", () => {
    const consoleText = [
      "noise",
      `KILN:0:2:${b64("hi\n")}::END`,
      `KILN:1:3:${b64("failed\n")}::END`,
      "KILN:2:0:::END",
      "KILN:3:1:::END",
      `KILN:4:0:${b64("204\n")}::END`,
      "KILN:DONE:END",
    ].join("\n");
    const { results, done } = parseResults(consoleText);
    expect(done).toBe(true);
    const r = evaluate(checks, results);
    expect(r.map((c) => [c.name, c.passed, c.actual])).toEqual([
      ["run: echo hi; exit 2", true, "exit 2"],
      ["unit ssh.service active", false, "failed"],
      ["file /etc/it's here exists", true, "exists"],
      ["port 22 listening", false, "not listening after 30s"],
      ["http http://127.0.0.1:8080/x", true, "HTTP 204"],
    ]);
  });

  it("a missing result is a failure, not a pass", () => {
    expect(evaluate(checks.slice(0, 1), [])[0]).toMatchObject({
      passed: false,
      actual: expect.stringContaining("no result"),
    });
  });

  it("checks that never came back say whether the unit started, with the console's tail", () => {
    const never = checksUnfinished("login: ", 0, 180_000, "login: ");
    expect(never).toMatch(/^the check unit had not started 180 s after ready .*multi-user\.target/);
    expect(never).toContain("--- last console lines ---\nlogin: ");
    expect(checksUnfinished("KILN:START:END\nKILN:0:0:::END", 1, 60_000, "x")).toMatch(
      /^the checks started but stopped after 1 result\(s\) within 60 s/,
    );
  });

  it("JUnit XML escapes and counts", () => {
    const xml = junitXml("s", [
      {
        target: "uefi",
        ready: true,
        readySeconds: 3,
        results: [
          { name: "a<b", kind: "run", passed: false, expected: "exit 0", actual: 'exit 1 "x"' },
        ],
      },
      { target: "bios", ready: false, readySeconds: null, bootError: "kernel panic", results: [] },
    ]);
    expect(xml).toContain(
      '<testsuite name="s on uefi" tests="1" failures="1" errors="0" time="3">',
    );
    expect(xml).toContain('name="a&lt;b"');
    expect(xml).toContain('<failure message="expected exit 0, got exit 1 &quot;x&quot;"/>');
    expect(xml).toContain('<error message="kernel panic"/>');
  });
});

describe("kiln test targets", () => {
  it("are the ones a build's artifacts allow, in a fixed order", () => {
    expect(targetsFor({})).toEqual([]);
    expect(targetsFor({ netboot: "/o/n.netboot" })).toEqual(["netboot"]);
    expect(targetsFor({ rootfs: "/o/r", disk: "/o/d.raw", iso: "/o/x.iso" })).toEqual([
      "nspawn",
      "uefi",
      "bios",
      "iso",
    ]);
  });

  it("inject files through a second archive after the build's own initrd", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kiln-initrd-"));
    try {
      // An initrd whose length is not a multiple of 4, as compressed ones often are.
      writeFileSync(join(dir, "initrd.img"), Buffer.from("initrd!"));
      const out = await initrdWith(
        join(dir, "initrd.img"),
        testInjection([{ name: "x", run: "true" }] as never),
        dir,
      );
      const bytes = readFileSync(out);
      expect(bytes.subarray(0, 8).toString("latin1")).toBe("initrd!\0");
      const list = execFileSync("cpio", ["-t", "--quiet"], { input: bytes.subarray(8) })
        .toString()
        .split("\n");
      expect(list).toContain("kiln-inject/usr/lib/kiln-test/checks.sh");
      expect(list).toContain(
        "kiln-inject/etc/systemd/system/multi-user.target.wants/kiln-test.service",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
