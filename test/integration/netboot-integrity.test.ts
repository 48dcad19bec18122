import { createHash } from "node:crypto";
import {
  appendFileSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kiln, sharedBuild } from "./helpers.js";

// Issue 13, point 5: the netboot initrd boots only the root image its build
// made. One build of examples/netboot.yaml; `kiln vm --netboot` serves each
// bundle's root.squashfs from this host over HTTP, as a boot server would.
// The bundle as built boots to ready; a copy whose root.squashfs was altered
// after the build, and one whose root.squashfs grew, stop in the initrd with
// the console message, and kiln reports a boot failure at once.
const OUT = mkdtempSync(join(tmpdir(), "kiln-it-netboot-integrity-"));
// The bundle as built (shared with netboot.test.ts; never changed: copies are).
let BUNDLE = "";

/** `kiln vm --netboot DIR --until-ready --json`: its report and how long it took. */
function bootNetboot(dir: string) {
  const started = performance.now();
  const r = kiln(["vm", "--netboot", dir, "--until-ready", "--timeout", "300", "--json"], {
    timeout: 600_000,
  });
  const seconds = Math.round((performance.now() - started) / 100) / 10;
  const report = JSON.parse(r.stdout || "{}") as {
    ready?: boolean;
    reason?: string;
    consoleTail?: string;
  };
  return { code: r.code, report, seconds, stderr: r.stderr };
}

/** A copy of the built bundle whose root image `change` alters. */
function tampered(name: string, change: (squashfs: string) => void): string {
  const dir = join(OUT, name);
  mkdirSync(dir);
  for (const f of readdirSync(BUNDLE)) copyFileSync(join(BUNDLE, f), join(dir, f));
  change(join(dir, "root.squashfs"));
  return dir;
}

const sha256 = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex");
let built = { sha: "", bytes: 0 };

beforeAll(() => {
  BUNDLE = join(sharedBuild("examples/netboot.yaml"), "netboot.netboot");
  const squashfs = join(BUNDLE, "root.squashfs");
  built = { sha: sha256(squashfs), bytes: statSync(squashfs).size };
});

afterAll(() => rmSync(OUT, { recursive: true, force: true }));

describe.sequential("netboot root image integrity (QEMU, TCG)", () => {
  it("the bundle as built boots to ready, its root image checked; kiln test runs the spec's checks inside it", () => {
    const started = performance.now();
    // A netboot-only build: kiln test picks the netboot target by itself.
    const t = kiln(["test", dirname(BUNDLE), "--json"], { timeout: 600_000 });
    const seconds = Math.round((performance.now() - started) / 100) / 10;
    const j = JSON.parse(t.stdout || "{}") as {
      ok?: boolean;
      targets?: {
        target: string;
        bootError?: string;
        results: { name: string; passed: boolean }[];
      }[];
    };
    expect(t.code, `${t.stderr}\n${j.targets?.[0]?.bootError ?? ""}`).toBe(0);
    expect(j.ok).toBe(true);
    expect(j.targets?.map((x) => x.target)).toEqual(["netboot"]);
    // The minimal example's checks (it extends it) and the netboot-only one, all run inside.
    const results = j.targets![0]!.results;
    expect(results.filter((c) => !c.passed)).toEqual([]);
    expect(results.map((c) => c.name)).toEqual(
      expect.arrayContaining(["sshd active", "hostname", "root image checked and from RAM"]),
    );
    console.log(`intact bundle: ready and checked, kiln test took ${seconds}s`);
  });

  it("a root.squashfs altered after the build stops the boot with the hash message", () => {
    const dir = tampered("altered", (f) => {
      const b = readFileSync(f);
      // One byte in the middle: the size is right, only the hash can tell.
      b[b.length >> 1]! ^= 0xff;
      writeFileSync(f, b);
    });
    const altered = sha256(join(dir, "root.squashfs"));
    expect(altered).not.toBe(built.sha);
    const r = bootNetboot(dir);
    expect(r.code).toBe(2);
    expect(r.report.ready).toBe(false);
    expect(r.report.reason).toBe(
      `netboot failed: kiln-netboot: FAILED: root.squashfs sha256 ${altered} does not match the build's ${built.sha}`,
    );
    // It never got as far as handing over to the image's init.
    expect(r.report.consoleTail).not.toMatch(/kiln-netboot: starting|systemd\[1\]/);
    console.log(`altered root.squashfs: hash message, kiln vm took ${r.seconds}s`);
  });

  it("a root.squashfs bigger than the build's is cut off at its size and refused", () => {
    const dir = tampered("grown", (f) => appendFileSync(f, Buffer.alloc(4 << 20, 0x5a)));
    const r = bootNetboot(dir);
    expect(r.code).toBe(2);
    expect(r.report.reason).toMatch(
      new RegExp(
        `^netboot failed: kiln-netboot: FAILED: root.squashfs from http://\\S+ is larger than the build's ${built.bytes} bytes$`,
      ),
    );
    expect(r.report.consoleTail).not.toMatch(/kiln-netboot: starting|systemd\[1\]/);
    console.log(`grown root.squashfs: size message, kiln vm took ${r.seconds}s`);
  });
});
