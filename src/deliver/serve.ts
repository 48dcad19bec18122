import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { networkInterfaces, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { log } from "../util/log.js";
import { BootServer } from "./bootserver.js";
import { Discovery } from "./discovery.js";
import { type DhcpMode, dnsmasqConfig, prepareTftpRoot, superviseDnsmasq } from "./dnsmasq.js";

export interface ServeOptions {
  inventory: string;
  iface: string;
  dhcp: DhcpMode;
  range?: [string, string];
  httpPort: number;
  /** Address machines reach the server at; default the interface's IPv4. */
  address?: string;
  db: string;
}

/** `kiln serve`: the HTTP boot server and a supervised dnsmasq, both bound to one interface. */
export async function startServe(o: ServeOptions): Promise<void> {
  const addr = (networkInterfaces()[o.iface] ?? []).find((a) => a.family === "IPv4");
  if (!addr) {
    throw new KilnError("SERVE_NO_INTERFACE", `interface ${o.iface} has no IPv4 address`, {
      hint: "give the interface an address, or name another with --interface",
    });
  }
  const publicUrl = `http://${o.address ?? addr.address}:${o.httpPort}`;
  const http = new BootServer({
    inventoryFile: resolve(o.inventory),
    publicUrl,
    discovery: await Discovery.open(resolve(o.db)),
    host: addr.address,
    port: o.httpPort,
  });
  await http.listen();
  onCleanup("HTTP server", () => http.close());
  log.info(`http: serving ${publicUrl}/boot.ipxe on ${o.iface}`);

  const dir = await mkdtemp(join(tmpdir(), "kiln-serve-"));
  onCleanup(`serve scratch ${dir}`, () => rm(dir, { recursive: true, force: true }));
  await prepareTftpRoot(join(dir, "tftp"));
  const conf = join(dir, "dnsmasq.conf");
  await writeFile(
    conf,
    dnsmasqConfig({
      iface: o.iface,
      mode: o.dhcp,
      network: networkOf(addr.address, addr.netmask),
      netmask: addr.netmask,
      ...(o.range ? { range: o.range } : {}),
      tftpRoot: join(dir, "tftp"),
      bootUrl: `${publicUrl}/boot.ipxe`,
      leaseFile: join(dir, "leases"),
    }),
  );
  const d = await superviseDnsmasq(conf, dir);
  onCleanup("dnsmasq", () => d.stop());
  log.info(`dnsmasq: DHCP ${o.dhcp}, TFTP on ${o.iface}`);
}

export function networkOf(ip: string, mask: string): string {
  const a = ip.split(".").map(Number);
  const m = mask.split(".").map(Number);
  return a.map((x, i) => x & (m[i] ?? 0)).join(".");
}
