import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { networkInterfaces, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { openFleet } from "../fleet/open.js";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { log } from "../util/log.js";
import { AdminServer, adminTokenFile, loadOrCreateAdminToken } from "./admin.js";
import { BootServer } from "./bootserver.js";
import { type DhcpMode, dnsmasqConfig, prepareTftpRoot, superviseDnsmasq } from "./dnsmasq.js";
import { fleetLimits } from "./limits.js";

export interface ServeOptions {
  inventory: string;
  iface: string;
  dhcp: DhcpMode;
  range?: [string, string];
  httpPort: number;
  /** Address machines reach the server at; default the interface's IPv4. */
  address?: string;
  db: string;
  /** HOST:PORT of the admin listener (reports, machines); never the boot listener. */
  adminListen: string;
  /** Requests per second per client address on the small endpoints (0: off). */
  rateLimit?: number;
  /** The admin token's file (default: adminTokenFile(db)). */
  adminTokenFile?: string;
  /** This replica's name in the fleet's records (default: address:port). */
  name?: string;
}

/** HOST:PORT (IPv4 or a name; [v6]:PORT) → parts, or a usage error. */
export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  const port = Number(m?.[3]);
  if (!m || port > 65535)
    throw new KilnError("USAGE", `--admin-listen ${JSON.stringify(s)} is not HOST:PORT`, {
      hint: "e.g. --admin-listen 127.0.0.1:8079",
      exitCode: 2,
    });
  return { host: (m[1] ?? m[2])!, port };
}

/** `kiln serve`: the HTTP boot server and a supervised dnsmasq, both bound to one interface. */
export async function startServe(o: ServeOptions): Promise<void> {
  const addr = (networkInterfaces()[o.iface] ?? []).find((a) => a.family === "IPv4");
  if (!addr) {
    throw new KilnError("SERVE_NO_INTERFACE", `interface ${o.iface} has no IPv4 address`, {
      hint: "give the interface an address, or name another with --interface",
    });
  }
  const admin = parseListen(o.adminListen);
  if (admin.port === o.httpPort && (admin.host === addr.address || admin.host === "0.0.0.0"))
    throw new KilnError("SERVE_ADMIN_ON_BOOT", "the admin listener would share the boot listener", {
      hint: "give --admin-listen another address or port (default 127.0.0.1:8079)",
    });
  const publicUrl = `http://${o.address ?? addr.address}:${o.httpPort}`;
  const limits = o.rateLimit !== undefined ? { ratePerSecond: o.rateLimit } : {};
  const fleet = await openFleet(o.db, fleetLimits(limits));
  onCleanup(`fleet database ${fleet.where}`, () => fleet.close());
  log.info(`fleet: ${fleet.kind} ${fleet.where}`);
  const http = new BootServer({
    inventoryFile: resolve(o.inventory),
    publicUrl,
    fleet,
    serverName: o.name ?? `${o.address ?? addr.address}:${o.httpPort}`,
    host: addr.address,
    port: o.httpPort,
    limits,
  });
  await http.listen();
  onCleanup("HTTP server", () => http.close());
  log.info(`http: serving ${publicUrl}/boot.ipxe on ${o.iface}`);

  const tokenFile = o.adminTokenFile ? resolve(o.adminTokenFile) : adminTokenFile(o.db);
  const adminServer = new AdminServer({
    token: loadOrCreateAdminToken(tokenFile),
    reports: http.reports,
    fleet,
    assigned: (profile) => http.assigned(profile),
    host: admin.host,
    port: admin.port,
  });
  const adminPort = await adminServer.listen();
  onCleanup("admin server", () => adminServer.close());
  const shown = admin.host.includes(":") ? `[${admin.host}]` : admin.host;
  log.info(
    `admin: dashboard http://${shown}:${adminPort}/ (also /reports.json, /machines.json), token in ${tokenFile}`,
  );

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
