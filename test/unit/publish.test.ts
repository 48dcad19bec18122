import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { sizeBytes } from "../../src/cli/import.js";
import {
  extractMember,
  findDisk,
  readVerifiedImage,
  sumsTag,
  writeContainerDisk,
} from "../../src/publish/containerdisk.js";
import { blobPath, type ImageFacts, MEDIA } from "../../src/publish/layout.js";
import { sumIn } from "../../src/publish/push.js";
import {
  accessFrom,
  authFileFor,
  parseRegistryRef,
  refText,
  withCredentials,
} from "../../src/publish/registry.js";
import { listTar, TAR_END, tarHeader } from "../../src/util/tar-format.js";
import { hostileDisks, layoutOf } from "../integration/fixtures/hostile-disks.js";

const TMP = mkdtempSync(join(tmpdir(), "kiln-unit-publish-"));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const FACTS: ImageFacts = {
  architecture: "amd64",
  created: "2026-12-01T10:00:00.000Z",
  labels: { "org.opencontainers.image.title": "minimal", "dev.kiln.version": "0.1.0" },
  annotations: { "org.opencontainers.image.version": "1.0", "dev.kiln.spec.name": "minimal" },
  history: "kiln push (disk/minimal.qcow2)",
};

function gnuTar(args: string[]): string {
  const r = spawnSync("tar", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout;
}

describe("the containerDisk writer", () => {
  const disk = join(TMP, "minimal.qcow2");
  const content = Buffer.concat([Buffer.from("QFI\xfb", "latin1"), Buffer.alloc(70_001, 7)]);
  writeFileSync(disk, content);
  const d = { path: disk, size: content.length, sha256: sha(content) };

  it("lays the disk out as KubeVirt expects: disk/NAME.qcow2, 107:107, 0440, in one tar layer", async () => {
    const layout = join(TMP, "one");
    const { manifest, layer } = await writeContainerDisk(layout, "1.0", d, FACTS);
    const listing = gnuTar(["-tvv", "--numeric-owner", "-f", blobPath(layout, layer.digest)]);
    expect(listing).toMatch(/^dr-xr-xr-x 107\/107\s+0 1970-01-01 00:00 disk\/$/m);
    expect(listing).toMatch(
      new RegExp(
        `^-r--r----- 107/107\\s+${content.length} 1970-01-01 00:00 disk/minimal.qcow2$`,
        "m",
      ),
    );
    expect(listing.trim().split("\n")).toHaveLength(2);
    // GNU tar unpacks the same bytes kiln packed.
    const into = join(TMP, "unpacked");
    mkdirSync(into);
    gnuTar(["-C", into, "-xf", blobPath(layout, layer.digest)]);
    expect(sha(readFileSync(join(into, "disk", "minimal.qcow2")))).toBe(d.sha256);

    const image = await readVerifiedImage(layout);
    expect(image.digest).toBe(manifest.digest);
    expect(image.manifest.layers).toEqual([layer]);
    expect(layer.mediaType).toBe(MEDIA.layer);
    expect(image.manifest.annotations).toMatchObject({
      "dev.kiln.disk.sha256": d.sha256,
      "dev.kiln.disk.file": "minimal.qcow2",
      "org.opencontainers.image.version": "1.0",
    });
    const config = JSON.parse(readFileSync(blobPath(layout, image.manifest.config.digest), "utf8"));
    expect(config).toMatchObject({
      architecture: "amd64",
      os: "linux",
      created: FACTS.created,
      rootfs: { type: "layers", diff_ids: [layer.digest] },
    });
    expect(Object.keys(config.config.Labels)).toEqual(Object.keys(config.config.Labels).sort());
    const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8"));
    expect(index.manifests).toEqual([
      { ...manifest, annotations: { "org.opencontainers.image.ref.name": "1.0" } },
    ]);
  });

  it("is deterministic: the same build gives the same digests, whenever and wherever it is packed", async () => {
    const a = await writeContainerDisk(join(TMP, "a"), "1.0", d, FACTS);
    utimesSync(disk, new Date(), new Date(Date.now() + 5_000));
    // Keys given in another order make the same JSON.
    const shuffled = {
      ...FACTS,
      labels: Object.fromEntries(Object.entries(FACTS.labels).reverse()),
      annotations: Object.fromEntries(Object.entries(FACTS.annotations).reverse()),
    };
    const b = await writeContainerDisk(join(TMP, "b", "deeper"), "1.0", d, shuffled);
    expect(b.manifest.digest).toBe(a.manifest.digest);
    expect(b.layer.digest).toBe(a.layer.digest);
    expect(readFileSync(join(TMP, "b", "deeper", "index.json"))).toEqual(
      readFileSync(join(TMP, "a", "index.json")),
    );
    const c = await writeContainerDisk(join(TMP, "c"), "1.0", d, {
      ...FACTS,
      created: "2027-01-01T00:00:00Z",
    });
    expect(c.manifest.digest).not.toBe(a.manifest.digest);
    expect(c.layer.digest).toBe(a.layer.digest);
  });

  it("refuses a disk that no longer matches the build's manifest", async () => {
    await expect(
      writeContainerDisk(join(TMP, "changed"), "1.0", { ...d, sha256: "0".repeat(64) }, FACTS),
    ).rejects.toThrow(/hashes to [0-9a-f]{64}, the build's manifest.json records 0{64}/);
  });

  it("names the sums tag after the digest, not the tag", () => {
    expect(sumsTag(`sha256:${"ab".repeat(32)}`)).toBe(`sha256-${"ab".repeat(32)}.sums`);
  });
});

describe("the tar reader", () => {
  it("reads GNU tar's ustar, pax (long names) and link members as they are", async () => {
    const tree = join(TMP, "tree");
    const long = `${"d".repeat(120)}/${"f".repeat(90)}.qcow2`;
    mkdirSync(join(tree, "d".repeat(120)), { recursive: true });
    writeFileSync(join(tree, long), "x".repeat(1000));
    symlinkSync("/etc/shadow", join(tree, "link"));
    const tar = join(TMP, "pax.tar");
    gnuTar(["--format=pax", "-C", tree, "-cf", tar, "."]);
    const members = await listTar(tar);
    const byName = Object.fromEntries(members.map((m) => [m.name, m]));
    expect(byName[`./${long}`]).toMatchObject({ type: "0", size: 1000 });
    expect(byName["./link"]).toMatchObject({ type: "2", linkname: "/etc/shadow" });
    const f = byName[`./${long}`]!;
    expect(
      readFileSync(tar)
        .subarray(f.offset, f.offset + f.size)
        .toString(),
    ).toBe("x".repeat(1000));
  });

  it("refuses a bad checksum, a truncated member and a missing end", async () => {
    const good = Buffer.concat([
      tarHeader({ name: "a", type: "file", mode: 0o644, uid: 0, gid: 0, size: 600 }),
      Buffer.alloc(1024),
      TAR_END,
    ]);
    const write = (name: string, b: Buffer) => {
      writeFileSync(join(TMP, name), b);
      return join(TMP, name);
    };
    expect(await listTar(write("good.tar", good))).toHaveLength(1);
    const flipped = Buffer.from(good);
    flipped[0] = 0x62;
    await expect(listTar(write("sum.tar", flipped))).rejects.toThrow(/checksum is wrong/);
    await expect(listTar(write("short.tar", good.subarray(0, 700)))).rejects.toThrow(
      /runs past the end/,
    );
    await expect(listTar(write("noend.tar", good.subarray(0, 1536)))).rejects.toThrow(
      /without the two zero blocks/,
    );
  });

  it("writes and reads sizes past ustar's 8 GiB (base-256), as GNU tar does", async () => {
    const size = 8 * 1024 ** 3 + 512;
    const file = join(TMP, "huge.tar");
    const fd = openSync(file, "w");
    writeSync(
      fd,
      tarHeader({ name: "disk/big.raw", type: "file", mode: 0o440, uid: 107, gid: 107, size }),
    );
    writeSync(fd, TAR_END, 0, TAR_END.length, 512 + size); // sparse: nothing in between is written
    closeSync(fd);
    expect(await listTar(file)).toMatchObject([{ name: "disk/big.raw", size, offset: 512 }]);
    expect(gnuTar(["-tvf", file])).toContain(`${size} 1970-01-01 00:00 disk/big.raw`);
  });
});

describe("taking a disk out of an image", () => {
  it("finds and extracts the disk of a kiln layout; a gzip layer (docker build's) works too", async () => {
    const content = Buffer.alloc(10_000, 3);
    const disk = join(TMP, "plain.raw");
    writeFileSync(disk, content);
    const layout = join(TMP, "extract");
    const { layer } = await writeContainerDisk(
      layout,
      "latest",
      { path: disk, size: content.length, sha256: sha(content) },
      FACTS,
    );
    const image = await readVerifiedImage(layout);
    mkdirSync(join(TMP, "scratch1"));
    const found = await findDisk(layout, image, join(TMP, "scratch1"), 1 << 20);
    expect(found.file).toBe("plain.raw");
    expect(await extractMember(found, join(TMP, "out.raw"))).toBe(sha(content));
    expect(readFileSync(join(TMP, "out.raw"))).toEqual(content);

    const gz = join(TMP, "layer.tar.gz");
    writeFileSync(gz, gzipSync(readFileSync(blobPath(layout, layer.digest))));
    await layoutOf(join(TMP, "gz"), gz, MEDIA.dockerLayerGzip);
    const gzImage = await readVerifiedImage(join(TMP, "gz"));
    mkdirSync(join(TMP, "scratch2"));
    const inGz = await findDisk(join(TMP, "gz"), gzImage, join(TMP, "scratch2"), 1 << 20);
    expect(await extractMember(inGz, join(TMP, "out2.raw"))).toBe(sha(content));
    // A gzip bomb (70 MiB of zeros in 70 KiB) is stopped while it unpacks, bounded by
    // the disk bound plus 64 MiB for whatever else the layer holds.
    const zeros = 70 * 1024 ** 2;
    const bomb = join(TMP, "bomb.tar.gz");
    writeFileSync(
      bomb,
      gzipSync(
        Buffer.concat([
          tarHeader({ name: "disk/z.raw", type: "file", mode: 0o440, uid: 0, gid: 0, size: zeros }),
          Buffer.alloc(zeros),
          TAR_END,
        ]),
      ),
    );
    await layoutOf(join(TMP, "bomb"), bomb, MEDIA.layerGzip);
    mkdirSync(join(TMP, "scratch3"));
    await expect(
      findDisk(
        join(TMP, "bomb"),
        await readVerifiedImage(join(TMP, "bomb")),
        join(TMP, "scratch3"),
        1000,
      ),
    ).rejects.toThrow(/a layer unpacks to more than 67109864 bytes/);
    expect(readdirSync(join(TMP, "scratch3"))).toEqual([]);
  });

  it("refuses a disk over the size bound", async () => {
    const image = await readVerifiedImage(join(TMP, "extract"));
    mkdirSync(join(TMP, "scratch4"));
    await expect(
      findDisk(join(TMP, "extract"), image, join(TMP, "scratch4"), 9_999),
    ).rejects.toThrow(/disk\/plain\.raw is 10000 bytes, over the 9999 allowed/);
  });

  it("refuses a blob that does not hash to its digest, or is missing", async () => {
    const layout = join(TMP, "tampered");
    const disk = join(TMP, "t.qcow2");
    writeFileSync(disk, "QFI");
    const { layer } = await writeContainerDisk(
      layout,
      "latest",
      { path: disk, size: 3, sha256: sha(Buffer.from("QFI")) },
      FACTS,
    );
    const blob = blobPath(layout, layer.digest);
    const bytes = readFileSync(blob);
    bytes[bytes.length - 2000] = 0x41;
    writeFileSync(blob, bytes);
    await expect(readVerifiedImage(layout)).rejects.toThrow(
      new RegExp(`layer 1: blob ${layer.digest} hashes to sha256:`),
    );
    rmSync(blob);
    await expect(readVerifiedImage(layout)).rejects.toThrow(/layer 1: blob .* is missing/);
  });

  it("refuses every hostile image, naming why", async () => {
    const dir = join(TMP, "hostile");
    mkdirSync(dir);
    const cases = await hostileDisks(dir);
    expect(cases.map((c) => c.name)).toEqual([
      "symlink",
      "dotdot",
      "no-disk",
      "two-disks",
      "hardlink",
      "whiteout",
    ]);
    for (const c of cases) {
      const image = await readVerifiedImage(c.layout);
      const scratch = join(dir, `${c.name}.scratch`);
      mkdirSync(scratch);
      const err = await findDisk(c.layout, image, scratch, 1 << 30).then(
        () => new Error(`${c.name} was accepted`),
        (e: Error) => e,
      );
      expect(err.message, c.name).toMatch(c.expect);
      expect((err as { code?: string }).code, c.name).toBe("OCI_NOT_DISK");
    }
  });
});

describe("registry references and credentials", () => {
  it("parses HOST/REPO[:TAG][@DIGEST], with or without a transport", () => {
    expect(parseRegistryRef("localhost:5000/kiln/minimal:1.0")).toEqual({
      host: "localhost:5000",
      repo: "localhost:5000/kiln/minimal",
      tag: "1.0",
    });
    const digest = `sha256:${"a".repeat(64)}`;
    expect(parseRegistryRef(`oci://registry.example.org/a/b@${digest}`)).toEqual({
      host: "registry.example.org",
      repo: "registry.example.org/a/b",
      digest,
    });
    expect(refText(parseRegistryRef("docker://127.0.0.1:5000/x:y"))).toBe("127.0.0.1:5000/x:y");
    for (const [bad, why] of [
      ["minimal:1.0", /no registry host/],
      ["kiln/minimal:1.0", /"kiln" is not a registry host/],
      ["localhost:5000/Kiln/minimal", /not a repository path/],
      ["localhost:5000/kiln/minimal:bad/tag", /not a repository path/],
      ["localhost:5000/kiln/minimal:-x", /is not a tag/],
      ["localhost:5000/kiln/minimal@sha256:abc", /not sha256:HEX/],
    ] as const)
      expect(() => parseRegistryRef(bad), bad).toThrow(why);
  });

  it("writes credentials into a private auth file for the run, never a command line", async () => {
    expect(JSON.parse(authFileFor("r.example:5000", "me:s3cret"))).toEqual({
      auths: { "r.example:5000": { auth: Buffer.from("me:s3cret").toString("base64") } },
    });
    const saved = { creds: process.env.KILN_REGISTRY_CREDS, scratch: process.env.KILN_SCRATCH };
    process.env.KILN_SCRATCH = TMP;
    try {
      process.env.KILN_REGISTRY_CREDS = "me:s3cret";
      const access = { tlsVerify: true };
      const seen = await withCredentials("r.example:5000", access, async (file) => {
        expect(statSync(file!).mode & 0o777).toBe(0o600);
        return { file: file!, text: readFileSync(file!, "utf8") };
      });
      expect(seen.text).toBe(authFileFor("r.example:5000", "me:s3cret"));
      expect(existsSync(seen.file)).toBe(false);
      // An auth file given wins; without either, skopeo gets none.
      expect(await withCredentials("h", { ...access, authfile: "/a.json" }, async (f) => f)).toBe(
        "/a.json",
      );
      process.env.KILN_REGISTRY_CREDS = "no-colon";
      await expect(withCredentials("h", access, async (f) => f)).rejects.toThrow(/USER:PASSWORD/);
      delete process.env.KILN_REGISTRY_CREDS;
      expect(await withCredentials("h", access, async (f) => f)).toBeUndefined();
    } finally {
      for (const [k, v] of [
        ["KILN_REGISTRY_CREDS", saved.creds],
        ["KILN_SCRATCH", saved.scratch],
      ] as const)
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
    }
  });

  it("maps --insecure and --tls-verify, and reads --max-size", () => {
    expect(accessFrom({ tlsVerify: "true" })).toEqual({ tlsVerify: true });
    expect(accessFrom({ tlsVerify: "true", insecure: true, authfile: "a" })).toEqual({
      tlsVerify: false,
      authfile: "a",
    });
    expect(accessFrom({ tlsVerify: "false" })).toEqual({ tlsVerify: false });
    expect(() => accessFrom({ tlsVerify: "yes" })).toThrow(/true or false/);
    expect(sizeBytes("256G")).toBe(256 * 1024 ** 3);
    expect(sizeBytes("500MiB")).toBe(500 * 1024 ** 2);
    expect(sizeBytes("4096")).toBe(4096);
    expect(() => sizeBytes("lots")).toThrow(/not a size/);
  });

  it("looks a file up in a sha256sum list", () => {
    const list = `${"a".repeat(64)}  minimal.qcow2\n${"b".repeat(64)} *other.raw\n`;
    expect(sumIn(list, "minimal.qcow2")).toBe("a".repeat(64));
    expect(sumIn(list, "other.raw")).toBe("b".repeat(64));
    expect(sumIn(list, "minimal.raw")).toBeUndefined();
  });
});
