import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BootServer } from "../../src/deliver/bootserver.js";
import { openFleet } from "../../src/fleet/open.js";
import type { FleetStore } from "../../src/fleet/store.js";

// Install to disk, the server's side: which script a machine gets, the plan, the image
// on the wire, progress and result, and what a hostile client can and cannot do.
const dir = mkdtempSync(join(tmpdir(), "kiln-install-"));
const MAC = "52:54:00:00:17:01";
// Three MiB: data, zeros, data (a disk image is mostly empty space).
const MiB = 1 << 20;
const image = Buffer.alloc(3 * MiB);
image.write("GPT-ish header", 0);
image.write("end", 3 * MiB - 3);
const blockSha = (i: number) =>
  createHash("sha256")
    .update(image.subarray(i * MiB, (i + 1) * MiB))
    .digest("hex");
const sha = createHash("sha256").update(image).digest("hex");
let server: BootServer;
let fleet: FleetStore;
let base = "";

beforeAll(async () => {
  mkdirSync(join(dir, "web"));
  mkdirSync(join(dir, "installer"));
  for (const f of ["vmlinuz", "initrd.img", "root.squashfs"])
    writeFileSync(join(dir, "installer", f), f);
  writeFileSync(join(dir, "web", "web.raw"), image);
  writeFileSync(
    join(dir, "web", "manifest.json"),
    JSON.stringify({
      name: "web",
      version: "1.2.0",
      artifacts: [{ format: "disk", path: "web.raw", size: image.length, sha256: sha }],
    }),
  );
  writeFileSync(
    join(dir, "inventory.yaml"),
    `profiles:
  rack: { artifact: ./installer, install: { image: ./web } }
groups:
  - { name: rack1, profile: rack, selector: { serial: R1 } }
`,
  );
  fleet = await openFleet(join(dir, "fleet.sqlite"));
  server = new BootServer({
    inventoryFile: join(dir, "inventory.yaml"),
    publicUrl: "http://srv:1",
    fleet,
    host: "127.0.0.1",
    port: 0,
    limits: { ratePerSecond: 0 },
  });
  base = `http://127.0.0.1:${await server.listen()}`;
});
afterAll(async () => {
  await server.close();
  await fleet.close();
  rmSync(dir, { recursive: true, force: true });
});

const script = async () => (await fetch(`${base}/ipxe?mac=${MAC}&serial=R1`)).text();
const tokenOf = (s: string) => /kiln\.install=http:\/\/srv:1\/install\/([0-9a-f]{32})/.exec(s)?.[1];

describe("install to disk (server)", () => {
  let token = "";

  it("a machine of an install profile boots the installer, told where its plan is", async () => {
    const s = await script();
    expect(s).toContain("kernel http://srv:1/artifacts/rack/vmlinuz");
    token = tokenOf(s)!;
    expect(token).toMatch(/^[0-9a-f]{32}$/);
  });

  it("the plan names the image, its size and sha256 from the build's manifest, and the target rules", async () => {
    const r = await fetch(`${base}/install/${token}/plan`);
    expect(r.status).toBe(200);
    const plan = await r.text();
    expect(plan.split("\n")).toEqual([
      "kiln-install 1",
      "name web version 1.2.0",
      `image http://srv:1/install/${token}/image.gz`,
      `bytes ${image.length}`,
      `sha256 ${sha}`,
      "target auto",
      "overwrite 0",
      "after reboot",
      `progress http://srv:1/install/${token}/progress`,
      `result http://srv:1/install/${token}/result`,
      // Only data goes on the wire: the zero MiB between is the installer's to write.
      `extent 0 1 ${blockSha(0)}`,
      `extent 2 1 ${blockSha(2)}`,
      "",
    ]);
    expect(await fleet.install(MAC)).toMatchObject({ state: "installing", total: image.length });
  });

  it("streams the image's data extents gzip-compressed, in the plan's order", async () => {
    const r = await fetch(`${base}/install/${token}/image.gz`);
    expect(r.headers.get("content-type")).toBe("application/gzip");
    const wire = Buffer.from(await r.arrayBuffer());
    expect(wire.length).toBeLessThan(image.length / 10);
    const data = gunzipSync(wire);
    expect(data.equals(Buffer.concat([image.subarray(0, MiB), image.subarray(2 * MiB)]))).toBe(
      true,
    );
  });

  it("progress and a failed result are recorded; the next boot installs again", async () => {
    const p = await fetch(`${base}/install/${token}/progress?bytes=524288&rate=1000`, {
      method: "POST",
    });
    expect(p.status).toBe(204);
    expect(await fleet.install(MAC)).toMatchObject({ bytes: 524288, rate: 1000 });
    const f = await fetch(
      `${base}/install/${token}/result?state=failed&reason=${encodeURIComponent("sha256 mismatch \u001b[31m")}`,
      { method: "POST" },
    );
    expect(f.status).toBe(204);
    expect(await fleet.install(MAC)).toMatchObject({
      state: "failed",
      reason: "sha256 mismatch ?[31m",
    });
    expect(tokenOf(await script())).toBeDefined();
  });

  it("installed: from then on the machine boots its own disk, until a reinstall", async () => {
    token = tokenOf(await script())!;
    await fetch(`${base}/install/${token}/plan`);
    const ok = await fetch(
      `${base}/install/${token}/result?state=installed&bytes=${image.length}`,
      {
        method: "POST",
      },
    );
    expect(ok.status).toBe(204);
    const local = await script();
    expect(local).toContain("sanboot --no-describe --drive 0x80");
    expect(local).not.toContain("kernel ");
    const d = (await fleet.get(MAC))!;
    expect(d.installs[0]).toMatchObject({ state: "installed", image: "web 1.2.0" });
    expect(await fleet.resetInstall(MAC, "test")).toBe(true);
    expect(tokenOf(await script())).toBeDefined();
  });

  it("refuses unknown tokens, wrong methods and malformed numbers or states", async () => {
    const bad = "0".repeat(32);
    expect((await fetch(`${base}/install/${bad}/plan`)).status).toBe(404);
    expect((await fetch(`${base}/install/../../etc/plan`)).status).toBe(404);
    expect((await fetch(`${base}/install/${token}/progress`)).status).toBe(405);
    expect((await fetch(`${base}/install/${token}/plan`, { method: "POST" })).status).toBe(405);
    const post = (q: string) => fetch(`${base}/install/${token}/${q}`, { method: "POST" });
    expect((await post("progress?bytes=-1")).status).toBe(400);
    expect((await post("progress?bytes=1e9")).status).toBe(400);
    expect((await post("result?state=owned")).status).toBe(400);
  });
});
