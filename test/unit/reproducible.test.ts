import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { listingDifferences, parseListing } from "../../src/artifact/contents.js";
import {
  debFileName,
  type Lock,
  lockChanges,
  makeLock,
  parsePrintUris,
  readLock,
  staleness,
} from "../../src/distro/lock.js";
import type { RootfsRecipe } from "../../src/distro/mmdebstrap.js";
import { usedInodes } from "../../src/image/fs.js";
import { derivedHex, derivedUuid } from "../../src/util/hash.js";

const TMP = mkdtempSync(join(tmpdir(), "kiln-unit-repro-"));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

const URIS = [
  "'http://deb.debian.org/debian/pool/main/a/adduser/adduser_3.134_all.deb' adduser_3.134_all.deb 183272 SHA256:c24fe4eb8e60d8632d72ed104cce7c92cff200847c897dc8ba764b6c47b519e0",
  "'http://deb.debian.org/debian-security/pool/updates/main/o/openssh/openssh-server_1%3a9.2p1-2+deb12u7_amd64.deb' openssh-server_1%3a9.2p1-2+deb12u7_amd64.deb 456000 SHA256:aa24fe4eb8e60d8632d72ed104cce7c92cff200847c897dc8ba764b6c47b519e",
].join("\n");

const recipe: RootfsRecipe = {
  release: "bookworm",
  mirror: "http://deb.debian.org/debian",
  arch: "amd64",
  packages: ["openssh-server", "sudo"],
  components: ["main"],
  sources: [{ uri: "http://deb.debian.org/debian", suite: "bookworm", components: ["main"] }],
  args: [],
};

function lock(): Lock {
  return makeLock({
    distro: "debian",
    recipe,
    suites: [
      { uri: "http://deb.debian.org/debian", suite: "bookworm", date: "2026-07-11T10:16:37.000Z" },
      { uri: "http://x", suite: "bookworm-updates", date: "2026-12-01T02:13:34.000Z" },
    ],
    packages: parsePrintUris(URIS),
  });
}

describe("SPEC.lock", () => {
  it("reads apt's print-uris: epochs decoded, sorted by name", () => {
    const p = parsePrintUris(URIS);
    expect(p.map((x) => `${x.name} ${x.version} ${x.arch} ${x.size}`)).toEqual([
      "adduser 3.134 all 183272",
      "openssh-server 1:9.2p1-2+deb12u7 amd64 456000",
    ]);
    expect(debFileName(p[1]!)).toBe("openssh-server_1%3a9.2p1-2+deb12u7_amd64.deb");
    expect(() => parsePrintUris("'http://x/a.deb' a.deb 1 MD5:00")).toThrow(/print-uris line/);
  });

  it("dates builds by the newest suite's Release", () => {
    expect(lock().sourceDateEpoch).toBe(Date.parse("2026-12-01T02:13:34Z") / 1000);
  });

  it("refuses a hostile lock field by field", () => {
    const f = join(TMP, "x.lock");
    const bad = (
      edit: (l: Record<string, unknown> & { packages: Record<string, unknown>[] }) => void,
    ) => {
      const l = JSON.parse(JSON.stringify(lock()));
      edit(l);
      writeFileSync(f, JSON.stringify(l));
      return () => readLock(f);
    };
    expect(bad(() => {})).not.toThrow();
    expect(bad((l) => (l.packages[0]!.url = "http://x/a.deb' ; rm -rf / #.deb"))).toThrow(
      /LOCK|kiln lock/,
    );
    expect(bad((l) => (l.packages[0]!.url = "file:///etc/passwd.deb"))).toThrow(/url/);
    expect(bad((l) => (l.packages[0]!.version = "1.0 --force"))).toThrow(/version/);
    expect(bad((l) => (l.packages[0]!.name = "../../x"))).toThrow(/name/);
    expect(bad((l) => (l.packages[0]!.sha256 = "abc"))).toThrow(/sha256/);
    expect(bad((l) => (l.extra = 1))).toThrow(/not a kiln lock/);
    writeFileSync(f, "{ not json");
    expect(() => readLock(f)).toThrow(/not JSON/);
    expect(readLock(join(TMP, "absent.lock"))).toBeUndefined();
  });

  it("says why it no longer fits a spec", () => {
    const l = lock();
    expect(staleness(l, "debian", recipe)).toEqual([]);
    expect(staleness(l, "debian", { ...recipe, packages: ["curl", "openssh-server"] })).toEqual([
      "the spec now includes curl",
      "the spec no longer includes sudo",
    ]);
    expect(staleness(l, "debian", { ...recipe, arch: "arm64" })[0]).toMatch(/amd64.*arm64/);
  });

  it("lists what an update changed", () => {
    const before = lock();
    const after = JSON.parse(JSON.stringify(before)) as Lock;
    after.packages[1]!.version = "1:9.2p1-2+deb12u8";
    after.packages.push({ ...after.packages[0]!, name: "curl", version: "7.88" });
    after.packages.shift();
    expect(lockChanges(before, after)).toEqual([
      "  openssh-server: 1:9.2p1-2+deb12u7 → 1:9.2p1-2+deb12u8",
      "+ curl 7.88",
      "- adduser 3.134",
    ]);
  });
});

describe("derived ids and pinned times", () => {
  it("derives version-4-shaped UUIDs from the seed and label", () => {
    const u = derivedUuid("seed", "fs:root-a");
    expect(u).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(derivedUuid("seed", "fs:root-a")).toBe(u);
    expect(derivedUuid("seed", "fs:root-b")).not.toBe(u);
    expect(derivedUuid("other", "fs:root-a")).not.toBe(u);
    expect(derivedHex("seed", "fs:esp", 4)).toMatch(/^[0-9a-f]{8}$/);
  });

  it("finds the inodes in use from dumpe2fs's group listing", () => {
    const dump = [
      "Inodes per group:         16",
      "Group 0: (Blocks 1-8192)",
      "  Free inodes: 14-16",
      "Group 1: (Blocks 8193-16384)",
      "  Free inodes: 17-20, 22-32",
      "Group 2: (Blocks 16385-20000)",
      "  Free inodes: ",
    ].join("\n");
    expect(usedInodes(dump)).toEqual([
      2,
      11,
      12,
      13,
      21,
      ...Array.from({ length: 16 }, (_, i) => 33 + i),
    ]);
  });
});

describe("kiln diff's listing comparison", () => {
  it("names added, removed and changed paths in path order", () => {
    const a = parseListing("/\td 755 0:0\n/etc/motd\tf 644 0:0 5 aa\n/gone\tf 644 0:0 1 bb\n");
    const b = parseListing("/\td 755 0:0\n/etc/motd\tf 644 0:0 6 cc\n/new\tl 777 0:0 -> x\n");
    expect(listingDifferences(a, b)).toEqual([
      { path: "/etc/motd", a: "f 644 0:0 5 aa", b: "f 644 0:0 6 cc" },
      { path: "/gone", a: "f 644 0:0 1 bb" },
      { path: "/new", b: "l 777 0:0 -> x" },
    ]);
    expect(listingDifferences(a, a)).toEqual([]);
  });
});
