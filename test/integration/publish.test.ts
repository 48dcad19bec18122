import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  createReadStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostileDisks } from "./fixtures/hostile-disks.js";
import { ours, kiln as run, sharedBuild, until } from "./helpers.js";

// Issue 18, publishing: the shared minimal build is pushed to Debian's own
// docker-registry on loopback as a KubeVirt containerDisk, looked at with
// skopeo as any OCI tool would, and imported back with `kiln import oci://`;
// hostile images pushed to the same registry are refused with nothing stored.
const OUT = join(tmpdir(), "publish");
const STORE = join(OUT, "store");
const kiln = (args: string[]) => run(args, { env: { KILN_STORE: STORE } });

let BUILD: string;
let registry: ChildProcess | undefined;
let HOST: string;
let artifacts: { format: string; path: string; sha256: string }[];

const sha256 = async (file: string) => {
  const h = createHash("sha256");
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest("hex");
};

function skopeo(args: string[]) {
  const r = spawnSync("skopeo", args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  expect(r.status, `skopeo ${args.join(" ")}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

const freePort = () =>
  new Promise<number>((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });

const storedDisks = () =>
  existsSync(join(STORE, "disks"))
    ? readdirSync(join(STORE, "disks")).filter((n) => n !== ".downloads")
    : [];
const scratchLeft = () =>
  readdirSync(tmpdir()).filter((n) => /^kiln-(oci-import|push|auth)-/.test(n));

beforeAll(async () => {
  BUILD = sharedBuild("examples/minimal.yaml");
  artifacts = JSON.parse(readFileSync(join(BUILD, "manifest.json"), "utf8")).artifacts;
  mkdirSync(OUT, { recursive: true });
  const port = await freePort();
  HOST = `127.0.0.1:${port}`;
  const config = join(OUT, "registry.yml");
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${join(OUT, "registry")}\nhttp:\n  addr: ${HOST}\n`,
  );
  registry = spawn("/usr/bin/docker-registry", ["serve", config], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  registry.stderr!.on("data", (b) => {
    log += String(b);
  });
  await until(
    `docker-registry on ${HOST} (${log.slice(-500)})`,
    async () => (await fetch(`http://${HOST}/v2/`).catch(() => undefined))?.ok === true,
  );
}, 1_800_000);

afterAll(async () => {
  registry?.kill();
  await until("docker-registry to exit", () => ours("docker-registry").length === 0, 10_000);
});

describe("kiln push and kiln import oci://", () => {
  let pushed: {
    ref: string;
    digest: string;
    layers: { mediaType: string; digest: string; size: number }[];
    disk: { file: string; sha256: string };
    sums: { ref: string; signed: boolean } | null;
  };
  const qcow2 = () => artifacts.find((a) => a.format === "qcow2")!;

  it("pushes the build's qcow2 as a containerDisk, the same digest every time", () => {
    const ref = `${HOST}/kiln/minimal:1.0`;
    const p = kiln(["push", BUILD, ref, "--insecure", "--json"]);
    expect(p.code, p.stderr).toBe(0);
    pushed = JSON.parse(p.stdout);
    expect(pushed).toMatchObject({
      ref,
      digest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
      disk: { file: "minimal.qcow2", sha256: qcow2().sha256 },
      sums: null,
    });
    expect(pushed.layers).toHaveLength(1);
    // A second push of the same build, under another tag, is the same image (and
    // without --json it says what it does).
    const again = kiln(["push", BUILD, `${HOST}/kiln/minimal:again`, "--insecure"]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.split("\n")[0]).toBe(`${HOST}/kiln/minimal:again@${pushed.digest}`);
    expect(again.stderr).toMatch(/✓ pack disk\/minimal\.qcow2 .*\n[\s\S]*✓ push .*minimal:again/);
  });

  it("skopeo sees the containerDisk layout: one tar layer holding disk/minimal.qcow2, 107:107, 0440", async () => {
    const ref = `docker://${HOST}/kiln/minimal:1.0`;
    const info = JSON.parse(skopeo(["inspect", "--tls-verify=false", ref]));
    expect(info.Digest).toBe(pushed.digest);
    expect(info.Layers).toEqual([pushed.layers[0]!.digest]);
    expect(info.Labels).toMatchObject({
      "dev.kiln.disk.sha256": qcow2().sha256,
      "dev.kiln.spec.name": "minimal",
      "org.opencontainers.image.title": "minimal",
    });
    const raw = JSON.parse(skopeo(["inspect", "--raw", "--tls-verify=false", ref]));
    expect(raw.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
    expect(raw.layers).toHaveLength(1);
    expect(raw.layers[0].mediaType).toBe("application/vnd.oci.image.layer.v1.tar");
    // The layer as the registry serves it, listed by GNU tar.
    const blob = await fetch(`http://${HOST}/v2/kiln/minimal/blobs/${raw.layers[0].digest}`);
    expect(blob.status).toBe(200);
    const layer = join(OUT, "layer.tar");
    writeFileSync(layer, Buffer.from(await blob.arrayBuffer()));
    expect(`sha256:${await sha256(layer)}`).toBe(raw.layers[0].digest);
    const list = spawnSync("tar", ["-tvv", "--numeric-owner", "-f", layer], { encoding: "utf8" });
    expect(list.stdout.trim().split("\n")).toEqual([
      expect.stringMatching(/^dr-xr-xr-x 107\/107 +0 1970-01-01 00:00 disk\/$/),
      expect.stringMatching(/^-r--r----- 107\/107 +\d+ 1970-01-01 00:00 disk\/minimal\.qcow2$/),
    ]);
  });

  it("with --sign-key, signed SHA256SUMS go under the digest's sums tag; import checks them and stores the disk", async () => {
    const keys = join(OUT, "keys");
    expect(kiln(["keys", "addons", keys]).code).toBe(0);
    const p = kiln([
      "push",
      BUILD,
      `${HOST}/kiln/minimal:1.0`,
      "--insecure",
      "--sign-key",
      join(keys, "addons.key.pem"),
      "--json",
    ]);
    expect(p.code, p.stderr).toBe(0);
    const signed = JSON.parse(p.stdout);
    expect(signed.digest).toBe(pushed.digest); // signing never changes the disk image
    expect(signed.sums).toMatchObject({
      ref: `${HOST}/kiln/minimal:${pushed.digest.replace(":", "-")}.sums`,
      signed: true,
    });

    const i = kiln([
      "import",
      `oci://${HOST}/kiln/minimal:1.0`,
      "--insecure",
      "--verify-key",
      join(keys, "addons.pub.pem"),
      "--name",
      "from-registry",
      "--json",
    ]);
    expect(i.code, i.stderr).toBe(0);
    const r = JSON.parse(i.stdout);
    expect(r).toMatchObject({
      name: "from-registry",
      source: `oci://${HOST}/kiln/minimal@${pushed.digest}`,
      // What was checked is the pushed qcow2's own sha256…
      verified: `sha256:${qcow2().sha256}`,
      format: "qcow2",
      oci: { sums: "signature verified", digest: pushed.digest },
    });
    // …and the store holds it as raw, converted back: byte for byte the raw disk the
    // build made its qcow2 from.
    const rawDisk = artifacts.find((a) => a.format === "disk")!;
    expect(await sha256(r.path)).toBe(rawDisk.sha256);
    expect(storedDisks()).toEqual(["from-registry"]);

    // Another key's signature is refused, and nothing is stored.
    const other = join(OUT, "other-keys");
    expect(kiln(["keys", "addons", other]).code).toBe(0);
    const bad = kiln([
      "import",
      `oci://${HOST}/kiln/minimal:1.0`,
      "--insecure",
      "--verify-key",
      join(other, "addons.pub.pem"),
      "--name",
      "foreign-key",
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/SHA256SUMS does not verify with .*other-keys\/addons\.pub\.pem/);
    // The sums belong to the digest, not the tag: the same image under another tag has them.
    const byTag = kiln([
      "import",
      `oci://${HOST}/kiln/minimal:again`,
      "--insecure",
      "--name",
      "by-other-tag",
      "--verify-key",
      join(keys, "addons.pub.pem"),
    ]);
    expect(byTag.code, byTag.stderr).toBe(0);
    expect(byTag.stdout).toContain("(SHA256SUMS: signature verified)");
    // The raw disk pushed without sums is another image: --verify-key refuses it.
    const rawPush = kiln([
      "push",
      BUILD,
      `${HOST}/kiln/minimal:raw`,
      "--insecure",
      "--disk",
      "disk",
    ]);
    expect(rawPush.code, rawPush.stderr).toBe(0);
    expect(rawPush.stdout).toContain("disk/minimal.raw");
    const unsigned = kiln([
      "import",
      `oci://${HOST}/kiln/minimal:raw`,
      "--insecure",
      "--name",
      "unsigned",
      "--verify-key",
      join(keys, "addons.pub.pem"),
    ]);
    expect(unsigned.code).toBe(1);
    expect(unsigned.stderr).toMatch(/minimal:raw has no signed SHA256SUMS/);
    expect(storedDisks().sort()).toEqual(["by-other-tag", "from-registry"]);
    expect(scratchLeft()).toEqual([]);
  });

  it("a missing image, or a plain-HTTP registry without --insecure, is a clear error", () => {
    const missing = kiln(["import", `oci://${HOST}/kiln/nosuch:1`, "--insecure"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`${HOST}/kiln/nosuch:1 is not in the registry`);
    // A name already taken is refused before anything is fetched.
    const taken = kiln([
      "import",
      `oci://${HOST}/kiln/minimal:1.0`,
      "--insecure",
      "--name",
      "from-registry",
    ]);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toContain("a disk named from-registry is already imported");
    expect(taken.stderr).not.toContain("fetch");
    const tls = kiln(["push", BUILD, `${HOST}/kiln/minimal:tls`]);
    expect(tls.code).toBe(1);
    expect(tls.stderr).toMatch(/cannot push to .*minimal:tls: .*http/i);
    expect(tls.stderr).toContain("needs --insecure");
    expect(scratchLeft()).toEqual([]);
  });

  it("hostile images (symlink, ../ path, no disk, two disks, hard link, whiteout) are refused; nothing is stored", async () => {
    const dir = join(OUT, "hostile");
    mkdirSync(dir);
    const before = storedDisks();
    for (const c of await hostileDisks(dir)) {
      skopeo([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        `oci:${c.layout}:latest`,
        `docker://${HOST}/hostile/${c.name}:1`,
      ]);
      const r = kiln([
        "import",
        `oci://${HOST}/hostile/${c.name}:1`,
        "--insecure",
        "--name",
        c.name,
      ]);
      expect(r.code, `${c.name}: ${r.stderr}`).toBe(1);
      expect(r.stderr, c.name).toMatch(c.expect);
      expect(r.stderr, c.name).toMatch(/^kiln: error: /m);
    }
    expect(storedDisks()).toEqual(before);
    expect(readdirSync(join(STORE, "disks")).filter((n) => n.startsWith(".import-"))).toEqual([]);
    expect(scratchLeft()).toEqual([]);
    expect(ours("skopeo", { exact: true })).toEqual([]);
  });
});
