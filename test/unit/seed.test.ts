import { join } from "node:path";
import { verify } from "unixcrypt";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { loadSpec } from "../../src/config/load.js";
import { validateIgnition } from "../../src/seed/ignition.js";
import type { Secrets } from "../../src/seed/users.js";
import { seedFiles } from "../../src/seed/write.js";

const fx = (f: string) => join(import.meta.dirname, "fixtures", f);
const golden = (f: string) => join(import.meta.dirname, "golden", f);

/** Stable secrets so the golden files do not change from run to run. */
function fixedSecrets(): Secrets & { made: string[] } {
  const made: string[] = [];
  return {
    made,
    generate: () => {
      const p = `plain-${made.length + 1}-Xy7`;
      made.push(p);
      return p;
    },
    hash: (p) => `$6$fixed$hashed-${p}`,
  };
}

const spec = () => loadSpec(fx("seed.yaml")).spec;

describe("seeds: golden files", () => {
  it("NoCloud: user-data, meta-data, network-config v2 (static)", async () => {
    const s = seedFiles(spec(), "nocloud-dir", fixedSecrets());
    await expect(s.files["user-data"]).toMatchFileSnapshot(golden("nocloud/user-data"));
    await expect(s.files["meta-data"]).toMatchFileSnapshot(golden("nocloud/meta-data"));
    await expect(s.files["network-config"]).toMatchFileSnapshot(golden("nocloud/network-config"));
  });

  it("autoinstall: identity with a hashed per-build password, ssh, storage for the A/B layout", async () => {
    const s = seedFiles(spec(), "autoinstall", fixedSecrets());
    await expect(s.files["user-data"]).toMatchFileSnapshot(golden("autoinstall/user-data"));
    const ai = parse(s.files["user-data"]!).autoinstall;
    expect(ai.identity).toEqual({
      hostname: "web-1",
      username: "alice",
      password: "$6$fixed$hashed-plain-1-Xy7",
    });
    const parts = ai.storage.config.filter((a: { type: string }) => a.type === "partition");
    expect(parts.map((p: { id: string }) => p.id)).toEqual([
      "bios",
      "esp",
      "root-a",
      "root-b",
      "data",
    ]);
    expect(parts.at(-1).size).toBe(-1);
  });

  it("Ignition 3.4.0: users, hashes, keys, files (a source file too), units, runcmd", async () => {
    const s = seedFiles(spec(), "ignition", fixedSecrets());
    await expect(s.files["config.ign"]).toMatchFileSnapshot(golden("ignition/config.ign"));
    const ign = JSON.parse(s.files["config.ign"]!);
    expect(validateIgnition(ign)).toEqual([]);
    const motd = ign.storage.files.find((f: { path: string }) => f.path === "/etc/motd");
    expect(Buffer.from(motd.contents.source.split(",")[1], "base64").toString()).toBe(
      "motd from a source file\n",
    );
  });
});

describe("seeds: secrets", () => {
  it("a generated password is only in the credentials; the seed holds a hash that verifies", () => {
    for (const format of ["nocloud-dir", "autoinstall", "ignition"] as const) {
      const s = seedFiles(spec(), format);
      const alice = s.credentials.find((c) => c.user === "alice")!;
      expect(alice.password).toMatch(/^[A-Za-z0-9]{20}$/);
      const text = Object.values(s.files).join("\n");
      expect(text).not.toContain(alice.password);
      const hash = /\$6\$[^\s"]+/.exec(text)![0];
      expect(verify(alice.password, hash)).toBe(true);
    }
  });

  it("each call generates a new password", () => {
    const a = seedFiles(spec(), "nocloud-dir").credentials[0]!.password;
    const b = seedFiles(spec(), "nocloud-dir").credentials[0]!.password;
    expect(a).not.toBe(b);
  });
});

describe("Ignition validation", () => {
  const base = { ignition: { version: "3.4.0" } };
  it("accepts the minimum", () => expect(validateIgnition(base)).toEqual([]));
  it("names each problem by its path", () => {
    expect(
      validateIgnition({
        ignition: { version: "3.3.0" },
        passwd: { users: [{ name: "a", passwordHsh: "x" }] },
        storage: { files: [{ path: "etc/x", mode: "0644" }] },
        systemd: { units: [{ name: "nounit" }] },
      }),
    ).toEqual([
      expect.stringMatching(/^\$\.ignition\.version: /),
      expect.stringMatching(/^\$\.passwd\.users\[0\]: .*passwordHsh/),
      expect.stringMatching(/^\$\.storage\.files\[0\]\.path: /),
      expect.stringMatching(/^\$\.storage\.files\[0\]\.mode: /),
      "$.systemd.units[0].name: not a unit name",
    ]);
  });
});
