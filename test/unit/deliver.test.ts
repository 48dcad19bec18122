import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { moduleLoadOrder, parseModulesDep } from "../../src/builder/steps/netboot.js";
import { BootServer } from "../../src/deliver/bootserver.js";
import { dnsmasqConfig } from "../../src/deliver/dnsmasq.js";
import { openFleet } from "../../src/fleet/open.js";
import type { FleetStore } from "../../src/fleet/store.js";
import { safeJoin } from "../../src/util/http-files.js";

const dir = mkdtempSync(join(tmpdir(), "kiln-unit-"));
let server: BootServer;
let fleet: FleetStore;
let base = "";

beforeAll(async () => {
  mkdirSync(join(dir, "bundle"));
  writeFileSync(join(dir, "bundle", "vmlinuz"), "0123456789");
  writeFileSync(join(dir, "bundle", "cmdline"), "console=ttyS0,115200\n");
  writeFileSync(join(dir, "secret"), "do not serve");
  writeFileSync(
    join(dir, "inventory.yaml"),
    `profiles:\n  web: { artifact: ./bundle, metadata: { hostname: web1, role: web }, cloud_init: { user_data: "#cloud-config\\nruncmd: [touch /x]\\n" } }\ngroups:\n  - { name: g, profile: web, selector: { mac: "52:54:00:00:00:01" } }\n`,
  );
  fleet = await openFleet(join(dir, "db.sqlite"));
  server = new BootServer({
    inventoryFile: join(dir, "inventory.yaml"),
    publicUrl: "http://srv:1",
    fleet,
    host: "127.0.0.1",
    port: 0,
  });
  base = `http://127.0.0.1:${await server.listen()}`;
});
afterAll(async () => {
  await server.close();
  await fleet.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("boot server", () => {
  it("chains every client to a per-machine script with its identity", async () => {
    const chain = await (await fetch(`${base}/boot.ipxe`)).text();
    expect(chain).toContain(
      "chain http://srv:1/ipxe?mac=${netX/mac}&uuid=${uuid}&serial=${serial:uristring}",
    );
    const r = await fetch(`${base}/ipxe?mac=52-54-00-00-00-01&serial=S1&arch=x86_64`);
    const script = await r.text();
    // Metadata and cloud-init are named by a fresh 128-bit token per boot.
    const token = /kiln\.metadata=http:\/\/srv:1\/metadata\/([0-9a-f]{32})\.json/.exec(script)?.[1];
    expect(token).toBeDefined();
    expect(script.replaceAll(token!, "TOKEN")).toBe(
      "#!ipxe\nkernel http://srv:1/artifacts/web/vmlinuz initrd=initrd.img kiln.root=http://srv:1/artifacts/web/root.squashfs kiln.metadata=http://srv:1/metadata/TOKEN.json ds=nocloud;s=http://srv:1/cloud-init/TOKEN/ systemd.hostname=web1 console=ttyS0,115200\ninitrd --name initrd.img http://srv:1/artifacts/web/initrd.img\nboot\n",
    );
    const meta = await (await fetch(`${base}/metadata/${token}.json`)).json();
    expect(meta).toMatchObject({
      group: "g",
      profile: "web",
      hostname: "web1",
      role: "web",
      machine: { serial: "S1" },
    });
    expect(await (await fetch(`${base}/cloud-init/${token}/user-data`)).text()).toContain("runcmd");
    expect(await (await fetch(`${base}/cloud-init/${token}/meta-data`)).text()).toContain(
      'local-hostname: "web1"',
    );
    // The old per-MAC names, which anyone's later claim could change, are gone.
    expect((await fetch(`${base}/metadata/52%3A54%3A00%3A00%3A00%3A01.json`)).status).toBe(404);
    expect((await fetch(`${base}/cloud-init/52:54:00:00:00:01/user-data`)).status).toBe(404);
  });

  it("serves artifacts with Range, ETag and HEAD", async () => {
    const full = await fetch(`${base}/artifacts/web/vmlinuz`);
    expect(full.status).toBe(200);
    const etag = full.headers.get("etag")!;
    expect(await full.text()).toBe("0123456789");
    const part = await fetch(`${base}/artifacts/web/vmlinuz`, { headers: { Range: "bytes=2-4" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe("bytes 2-4/10");
    expect(await part.text()).toBe("234");
    const tail = await fetch(`${base}/artifacts/web/vmlinuz`, { headers: { Range: "bytes=-3" } });
    expect(await tail.text()).toBe("789");
    expect(
      (await fetch(`${base}/artifacts/web/vmlinuz`, { headers: { Range: "bytes=20-" } })).status,
    ).toBe(416);
    expect(
      (await fetch(`${base}/artifacts/web/vmlinuz`, { headers: { "If-None-Match": etag } })).status,
    ).toBe(304);
    const head = await fetch(`${base}/artifacts/web/vmlinuz`, { method: "HEAD" });
    expect(head.headers.get("content-length")).toBe("10");
  });

  it("serves a file of many buffers whole and in ranges, also after a client left mid-file", async () => {
    const big = Buffer.alloc(1024 * 1024 + 7);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 12)) & 0xff;
    writeFileSync(join(dir, "bundle", "big"), big);
    // Clients that go away after the first bytes: each response's buffer must come back.
    for (let i = 0; i < 70; i++) {
      const ctl = new AbortController();
      const r = await fetch(`${base}/artifacts/web/big`, { signal: ctl.signal });
      await r.body!.getReader().read();
      ctl.abort();
    }
    const whole = Buffer.from(await (await fetch(`${base}/artifacts/web/big`)).arrayBuffer());
    expect(whole.equals(big)).toBe(true);
    const from = 256 * 1024 - 3;
    const part = await fetch(`${base}/artifacts/web/big`, {
      headers: { Range: `bytes=${from}-${from + 600_000}` },
    });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(big.subarray(from, from + 600_001))).toBe(
      true,
    );
  });

  it("refuses bad input with a 4xx, never a file outside the served roots", async () => {
    for (const p of ["..%2Fsecret", "%2e%2e/secret", "..%2F..%2Fsecret", "%2e%2e%2fsecret"]) {
      const r = await fetch(`${base}/artifacts/web/${p}`);
      expect(r.status, p).toBeGreaterThanOrEqual(400);
      expect(r.status, p).toBeLessThan(500);
      expect(await r.text()).not.toContain("do not serve");
    }
    expect((await fetch(`${base}/artifacts/nope/vmlinuz`)).status).toBe(404);
    expect((await fetch(`${base}/ipxe?mac=zz:54:00:00:00:01`)).status).toBe(400);
    expect((await fetch(`${base}/ipxe?uuid=not-a-uuid&mac=52:54:00:00:00:01`)).status).toBe(400);
    expect((await fetch(`${base}/ipxe?serial=x`)).status).toBe(400);
    expect((await fetch(`${base}/ipxe?mac=52:54:00:00:00:01&x=${"a".repeat(3000)}`)).status).toBe(
      414,
    );
    expect((await fetch(`${base}/ipxe`, { method: "POST", body: "x" })).status).toBe(405);
    // The server is still fine afterwards.
    expect((await fetch(`${base}/boot.ipxe`)).status).toBe(200);
  });

  it("an unmatched machine gets a script that says so, and is recorded", async () => {
    const t = await (await fetch(`${base}/ipxe?mac=52:54:00:00:00:09`)).text();
    expect(t).toContain("no profile for this machine");
    // Committed before the answer: another connection reads it at once.
    const db = await openFleet(join(dir, "db.sqlite"));
    expect((await db.list()).find((m) => m.id === "52:54:00:00:00:09")).toMatchObject({
      group: null,
      profile: null,
    });
    await db.close();
  });

  it("safeJoin stays inside the root", () => {
    expect(safeJoin("/srv", "a/b")).toBe("/srv/a/b");
    for (const bad of ["../x", "a/../../x", "/etc/passwd", "%2e%2e/x", "a%00b", "%zz"])
      expect(safeJoin("/srv", bad)).toBeUndefined();
  });
});

describe("dnsmasq", () => {
  const base = {
    iface: "eth0",
    network: "10.0.0.0",
    netmask: "255.255.255.0",
    tftpRoot: "/t",
    bootUrl: "http://10.0.0.2:8080/boot.ipxe",
    leaseFile: "/l",
  };
  it("proxy mode: no DNS, one interface, iPXE per firmware, then HTTP", () => {
    const c = dnsmasqConfig({ ...base, mode: "proxy" });
    for (const line of [
      "port=0",
      "interface=eth0",
      "bind-interfaces",
      "dhcp-range=10.0.0.0,proxy,255.255.255.0",
      'pxe-service=tag:!ipxe,x86PC,"kiln: iPXE for BIOS",undionly',
      'pxe-service=tag:ipxe,X86-64_EFI,"kiln",http://10.0.0.2:8080/boot.ipxe',
    ]) {
      expect(c.split("\n")).toContain(line);
    }
  });
  it("full mode needs a range and chooses the loader by client architecture", () => {
    expect(() => dnsmasqConfig({ ...base, mode: "full" })).toThrow(/--range/);
    const c = dnsmasqConfig({ ...base, mode: "full", range: ["10.0.0.100", "10.0.0.200"] });
    expect(c).toContain("dhcp-range=10.0.0.100,10.0.0.200,255.255.255.0,1h");
    expect(c).toContain("dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi");
    expect(c).toContain("dhcp-boot=tag:ipxe,http://10.0.0.2:8080/boot.ipxe");
  });
  it("off: TFTP only, no DHCP", () => {
    expect(dnsmasqConfig({ ...base, mode: "off" })).not.toContain("dhcp-range");
  });
});

describe("netboot initrd modules", () => {
  it("loads dependencies first, each once, skipping built-ins", () => {
    const deps = parseModulesDep(
      "kernel/net/virtio_net.ko.zst: kernel/net/net_failover.ko.zst kernel/core/failover.ko.zst kernel/virtio/virtio.ko.zst\nkernel/net/net_failover.ko.zst: kernel/core/failover.ko.zst\nkernel/core/failover.ko.zst:\nkernel/virtio/virtio.ko.zst:\nkernel/fs/squashfs.ko.zst:\n",
    );
    expect(moduleLoadOrder(["virtio_net", "squashfs", "ext4"], deps)).toEqual([
      "kernel/core/failover.ko.zst",
      "kernel/net/net_failover.ko.zst",
      "kernel/virtio/virtio.ko.zst",
      "kernel/net/virtio_net.ko.zst",
      "kernel/fs/squashfs.ko.zst",
    ]);
  });
});
