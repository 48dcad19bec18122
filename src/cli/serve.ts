import { mkdtemp, rm } from "node:fs/promises";
import { networkInterfaces, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { BootServer } from "../deliver/bootserver.js";
import { Discovery } from "../deliver/discovery.js";
import {
  type DhcpMode,
  dnsmasqConfig,
  prepareTftpRoot,
  superviseDnsmasq,
  writeConfig,
} from "../deliver/dnsmasq.js";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { log } from "../util/log.js";
import { cacheDir } from "../util/paths.js";

export function defaultDb(): string {
  return process.env.KILN_DB ?? cacheDir("machines.sqlite");
}

export function registerServe(program: Command): void {
  program
    .command("serve")
    .requiredOption("--inventory <file>", "inventory YAML (profiles and groups)")
    .requiredOption("--interface <if>", "serve only on this interface")
    .option("--dhcp <mode>", "proxy (beside the site's DHCP), full (needs --range) or off", "proxy")
    .option("--range <first,last>", "addresses to hand out with --dhcp full")
    .option("--http-port <port>", "HTTP port", "8080")
    .option(
      "--address <ip>",
      "address machines reach this server at (default: the interface's IPv4)",
    )
    .option("--db <file>", "discovery database", defaultDb())
    .description(
      "network-boot machines: proxy-DHCP and TFTP (dnsmasq), iPXE scripts and artifacts over HTTP, per-machine inventory",
    )
    .action(
      async (o: {
        inventory: string;
        interface: string;
        dhcp: string;
        range?: string;
        httpPort: string;
        address?: string;
        db: string;
      }) => {
        const mode = o.dhcp as DhcpMode;
        if (!["proxy", "full", "off"].includes(mode))
          throw new KilnError("USAGE", "--dhcp is proxy, full or off", { exitCode: 2 });
        const addr = (networkInterfaces()[o.interface] ?? []).find((a) => a.family === "IPv4");
        if (!addr)
          throw new KilnError(
            "SERVE_NO_INTERFACE",
            `interface ${o.interface} has no IPv4 address`,
            { hint: "give the interface an address, or name another with --interface" },
          );
        const address = o.address ?? addr.address;
        const port = Number(o.httpPort);
        const publicUrl = `http://${address}:${port}`;
        const discovery = await Discovery.open(resolve(o.db));
        const http = new BootServer({
          inventoryFile: resolve(o.inventory),
          publicUrl,
          discovery,
          host: addr.address,
          port,
        });
        await http.listen();
        onCleanup("HTTP server", () => http.close());
        log.info(`http: serving ${publicUrl}/boot.ipxe on ${o.interface}`);

        const dir = await mkdtemp(join(tmpdir(), "kiln-serve-"));
        onCleanup(`serve scratch ${dir}`, () => rm(dir, { recursive: true, force: true }));
        {
          await prepareTftpRoot(join(dir, "tftp"));
          const conf = join(dir, "dnsmasq.conf");
          const range = o.range?.split(",") as [string, string] | undefined;
          await writeConfig(
            conf,
            dnsmasqConfig({
              iface: o.interface,
              mode,
              network: networkOf(addr.address, addr.netmask),
              netmask: addr.netmask,
              ...(range ? { range } : {}),
              tftpRoot: join(dir, "tftp"),
              bootUrl: `${publicUrl}/boot.ipxe`,
              leaseFile: join(dir, "leases"),
            }),
          );
          const d = await superviseDnsmasq(conf, dir);
          onCleanup("dnsmasq", () => d.stop());
          log.info(`dnsmasq: DHCP ${mode}, TFTP on ${o.interface}`);
        }
        // Serve until a signal; the cleanup handlers stop everything.
        await new Promise(() => {});
      },
    );
}

function networkOf(ip: string, mask: string): string {
  const a = ip.split(".").map(Number);
  const m = mask.split(".").map(Number);
  return a.map((x, i) => x & (m[i] ?? 0)).join(".");
}
