import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadSpec } from "../../src/config/load.js";
import {
  formatList,
  nextSerial,
  parseList,
  signInventory,
  signList,
  verifyList,
} from "../../src/deliver/addonlist.js";
import { BootServer } from "../../src/deliver/bootserver.js";
import { type AddonKeys, initAddonKeys } from "../../src/deliver/keys.js";
import { openFleet } from "../../src/fleet/open.js";
import { SpecError } from "../../src/util/errors.js";
import { hostileCases, startHostile } from "../integration/fixtures/hostile-addons.js";

const dir = mkdtempSync(join(tmpdir(), "kiln-unit-addons-"));
const AGENT = join(import.meta.dirname, "../../assets/kiln-agent/kiln-agent");
let keys: AddonKeys;
let foreign: AddonKeys;
const image = Buffer.from("a portable image\n");
const sha = createHash("sha256").update(image).digest("hex");

beforeAll(async () => {
  keys = await initAddonKeys(join(dir, "keys"));
  foreign = await initAddonKeys(join(dir, "foreign"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const list = (serial: string) =>
  formatList({
    serial,
    profiles: ["fleet", "empty"],
    entries: [{ profile: "fleet", kind: "portable", name: "web", version: "2.0.0", sha256: sha }],
  });

describe("signed add-on list", () => {
  it("kiln keys addons: a P-256 pair, the private key 0600, never overwritten unasked", async () => {
    expect(statSync(keys.key).mode & 0o777).toBe(0o600);
    expect(readFileSync(keys.pub, "utf8")).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    await expect(initAddonKeys(join(dir, "keys"))).rejects.toThrow(/already exists/);
  });

  it("round-trips and signs so that openssl (the agent's verifier) accepts it", () => {
    const text = list("20261202000000");
    expect(parseList(text)).toEqual({
      serial: "20261202000000",
      profiles: ["fleet", "empty"],
      entries: [{ profile: "fleet", kind: "portable", name: "web", version: "2.0.0", sha256: sha }],
    });
    const sig = signList(text, readFileSync(keys.key));
    expect(verifyList(text, sig, readFileSync(keys.pub))).toBe(true);
    expect(verifyList(text, sig, readFileSync(foreign.pub))).toBe(false);
    expect(verifyList(text.replace("2.0.0", "2.0.1"), sig, readFileSync(keys.pub))).toBe(false);
    writeFileSync(join(dir, "l"), text);
    writeFileSync(join(dir, "l.sig"), sig);
    const r = spawnSync("openssl", [
      "dgst",
      "-sha256",
      "-verify",
      keys.pub,
      "-signature",
      join(dir, "l.sig"),
      join(dir, "l"),
    ]);
    expect(r.status, String(r.stderr)).toBe(0);
  });

  it.each([
    ["a first line that is not the format", "kiln-addons 2\nserial 1\n", /kiln-addons 1/],
    ["no serial", "kiln-addons 1\nprofile p\n", /serial N/],
    ["a serial that is not digits", "kiln-addons 1\nserial 1e9\n", /serial N/],
    [
      "an undeclared profile",
      `kiln-addons 1\nserial 1\naddon p portable a 1 ${sha}\n`,
      /not declared/,
    ],
    ["a name of ..", `kiln-addons 1\nserial 1\nprofile p\naddon p portable .. 1 ${sha}\n`, /name/],
    ["a name with /", `kiln-addons 1\nserial 1\nprofile p\naddon p sysext a/b 1 ${sha}\n`, /name/],
    ["another kind", `kiln-addons 1\nserial 1\nprofile p\naddon p service a 1 ${sha}\n`, /kind/],
    ["a short sha256", "kiln-addons 1\nserial 1\nprofile p\naddon p portable a 1 abc\n", /sha256/],
    ["a CR", "kiln-addons 1\r\nserial 1\n", /control/],
    ["a long line", `kiln-addons 1\nserial 1\nprofile ${"a".repeat(600)}\n`, /longer/],
    ["a stray line", "kiln-addons 1\nserial 1\nurl=x\n", /not `profile P`/],
  ])("refuses %s", (_what, text, why) => {
    expect(() => parseList(text)).toThrow(why);
  });

  it("serials grow: from the clock, or past a previous one the clock has not reached", () => {
    const at = new Date("2026-12-02T01:02:03Z");
    expect(nextSerial(undefined, at)).toBe("20261202010203");
    expect(nextSerial("20261202010203", at)).toBe("20261202010204");
    expect(nextSerial("20261202010100", at)).toBe("20261202010203");
  });

  it("kiln addons sign hashes the inventory's files, checks pins, never lowers the serial", async () => {
    const inv = join(dir, "inv");
    mkdirSync(inv);
    writeFileSync(join(inv, "web_2.0.0.raw"), image);
    const write = (pin = "") =>
      writeFileSync(
        join(inv, "inventory.yaml"),
        `profiles:\n  fleet: { addons: [{ kind: portable, path: web_2.0.0.raw${pin} }] }\n  empty: {}\ngroups:\n  - { name: all, profile: fleet }\n`,
      );
    write();
    const r = await signInventory(join(inv, "inventory.yaml"), keys.key, { serial: "7" });
    expect(readFileSync(r.list, "utf8")).toBe(list("7"));
    expect(verifyList(readFileSync(r.list), readFileSync(r.sig), readFileSync(keys.pub))).toBe(
      true,
    );
    await expect(
      signInventory(join(inv, "inventory.yaml"), keys.key, { serial: "7" }),
    ).rejects.toThrow(/not above 7/);
    write(`, sha256: "${"f".repeat(64)}"`);
    await expect(signInventory(join(inv, "inventory.yaml"), keys.key)).rejects.toThrow(/pins/);
  });
});

describe("kiln serve with a signed list", () => {
  let server: BootServer;
  let base = "";
  const inv = join(dir, "serve");
  beforeAll(async () => {
    mkdirSync(inv);
    writeFileSync(join(inv, "web_2.0.0.raw"), image);
    writeFileSync(
      join(inv, "inventory.yaml"),
      "profiles:\n  fleet: { addons: [{ kind: portable, path: web_2.0.0.raw }] }\n  empty: {}\ngroups:\n  - { name: all, profile: fleet }\n",
    );
    await signInventory(join(inv, "inventory.yaml"), keys.key, { serial: "9" });
    server = new BootServer({
      inventoryFile: join(inv, "inventory.yaml"),
      publicUrl: "http://srv:1",
      fleet: await openFleet(join(dir, "serve.sqlite")),
      host: "127.0.0.1",
      port: 0,
    });
    base = `http://127.0.0.1:${await server.listen()}`;
  });
  afterAll(() => server.close());

  it("serves the list and signature unchanged, and an assignment made of its entries", async () => {
    const l = await fetch(`${base}/addons.list`);
    expect(await l.text()).toBe(readFileSync(join(inv, "addons.list"), "utf8"));
    const s = Buffer.from(await (await fetch(`${base}/addons.list.sig`)).arrayBuffer());
    expect(s.equals(readFileSync(join(inv, "addons.list.sig")))).toBe(true);
    // A machine_id with a newline in it (which would add lines) is refused outright.
    const bad = await fetch(`${base}/assignment?machine_id=${"a".repeat(32)}%0Aportable`);
    expect(bad.status).toBe(400);
    const a = await (await fetch(`${base}/assignment?machine_id=${"a".repeat(32)}`)).text();
    const lines = a.trim().split("\n");
    expect(lines[0]).toBe(`# kiln assignment for ${"a".repeat(32)}: group all, signed list 9`);
    expect(lines.slice(1)).toEqual([
      "profile fleet",
      `portable web 2.0.0 http://srv:1/addons/fleet/web_2.0.0.raw ${sha}`,
    ]);
  });
});

describe("kiln-agent against a hostile server (sh, no root: portablectl is a stub)", () => {
  it("refuses each case with its reason and touches nothing; a good list attaches", async () => {
    const t = join(dir, "agent");
    mkdirSync(join(t, "bin"), { recursive: true });
    for (const tool of ["portablectl", "systemd-sysext"]) {
      writeFileSync(join(t, "bin", tool), `#!/bin/sh\necho "$0 $*" >>${t}/calls\n`);
      chmodSync(join(t, "bin", tool), 0o755);
    }
    const port = 30000 + Math.floor(Math.random() * 20000);
    const signed = (serial: string) => {
      const text = list(serial);
      return { text, sig: signList(text, readFileSync(keys.key)) };
    };
    const current = signed("200");
    const line = `portable web 2.0.0 http://127.0.0.1:${port}/good/evil ${sha}`;
    const cases = hostileCases({
      current,
      older: signed("100"),
      foreignKey: readFileSync(foreign.key, "utf8"),
      key: readFileSync(keys.key, "utf8"),
      profile: "fleet",
      other: "empty",
      line,
      sha,
      evil: `http://127.0.0.1:${port}/inject-K/evil`,
    });
    const server = await startHostile(
      [
        ...cases,
        {
          name: "good",
          expect: "attached portable web 2.0.0",
          files: {
            ...{ "addons.list": current.text, "addons.list.sig": current.sig },
            assignment: `profile fleet\n${line}\n`,
            evil: image,
          },
        },
      ],
      port,
    );
    const state = join(t, "state");
    mkdirSync(state);
    writeFileSync(join(state, "serial"), "200\n");
    const run = (name: string) =>
      new Promise<string>((resolve) => {
        writeFileSync(
          join(t, `${name}.conf`),
          `URL=http://127.0.0.1:${port}/${name}\nSTATE=${state}\nKEY=${keys.pub}\nPROFILES="lab fleet"\n`,
        );
        const p = spawn("sh", [AGENT, "once"], {
          env: {
            ...process.env,
            PATH: `${join(t, "bin")}:${process.env.PATH}`,
            KILN_AGENT_CONF: join(t, `${name}.conf`),
          },
        });
        let out = "";
        p.stdout.on("data", (d: Buffer) => (out += d));
        p.stderr.on("data", (d: Buffer) => (out += d));
        p.on("close", () => resolve(out));
      });
    try {
      for (const c of cases) {
        const out = await run(c.name);
        expect(out, c.name).toContain(c.expect);
        expect(out, c.name).toContain("keeping what is attached");
      }
      expect(existsSync(join(t, "calls"))).toBe(false);
      expect(readdirSync(state).sort()).toEqual(["current", "incoming", "serial"]);
      expect(readFileSync(join(state, "serial"), "utf8")).toBe("200\n");
      expect(await run("good")).toContain("attached portable web 2.0.0");
      expect(readFileSync(join(t, "calls"), "utf8")).toContain(
        `portablectl attach --now --enable ${state}/images/portable/web/2.0.0/web_2.0.0.raw`,
      );
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe("spec: agent.keyring", () => {
  const spec = (agent: string) => {
    const f = join(dir, `spec-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(f, `name: x\ndistribution: { id: debian, release: bookworm }\nagent: ${agent}\n`);
    return f;
  };

  it("an agent without a keyring fails at the agent: line, saying how to make one", () => {
    let err: unknown;
    try {
      loadSpec(spec('{ url: "http://srv:8080" }'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SpecError);
    const d = (err as SpecError).diagnostics[0]!;
    expect(d.loc.line).toBe(3);
    expect(d.message).toMatch(/kiln keys addons/);
    expect(d.message).toMatch(/insecure_unsigned/);
  });

  it("a keyring resolves against the spec; insecure_unsigned is the explicit opt-out", () => {
    const s = loadSpec(spec('{ url: "http://srv:8080", keyring: keys/addons.pub.pem }')).spec;
    expect(s.agent?.keyring).toBe(join(dir, "keys/addons.pub.pem"));
    const lab = loadSpec(spec('{ url: "http://srv:8080", insecure_unsigned: true }')).spec;
    expect(lab.agent).toMatchObject({ insecure_unsigned: true });
    expect(lab.agent?.keyring).toBeUndefined();
  });

  it("a URL that would break out of the agent's conf is refused", () => {
    expect(() => loadSpec(spec(`{ url: "http://srv/$(reboot)", keyring: k.pem }`))).toThrow(
      SpecError,
    );
  });
});
