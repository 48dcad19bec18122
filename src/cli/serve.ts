import type { Command } from "commander";
import type { DhcpMode } from "../deliver/dnsmasq.js";
import { startServe } from "../deliver/serve.js";
import { defaultDb } from "../fleet/open.js";
import { KilnError } from "../util/errors.js";

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
    .option(
      "--db <file|url>",
      "fleet database: a SQLite file, or postgres://… shared by several replicas",
      defaultDb(),
    )
    .option("--admin-token-file <file>", "the admin token (default: beside a SQLite --db)")
    .option("--name <name>", "this replica's name in the fleet's records (default: address:port)")
    .option(
      "--admin-listen <host:port>",
      "admin listener (reports, machines; bearer token in DB.admin-token)",
      "127.0.0.1:8079",
    )
    .option(
      "--rate-limit <n>",
      "requests per second per client address on /ipxe, /assignment, /report, metadata (0: off)",
      "10",
    )
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
        adminListen: string;
        rateLimit: string;
        adminTokenFile?: string;
        name?: string;
      }) => {
        const rate = Number(o.rateLimit);
        if (!Number.isFinite(rate) || rate < 0)
          throw new KilnError("USAGE", "--rate-limit is a number of requests per second", {
            exitCode: 2,
          });
        if (!["proxy", "full", "off"].includes(o.dhcp))
          throw new KilnError("USAGE", "--dhcp is proxy, full or off", { exitCode: 2 });
        const range = o.range?.split(",");
        if (range && range.length !== 2)
          throw new KilnError("USAGE", "--range is FIRST,LAST", { exitCode: 2 });
        await startServe({
          inventory: o.inventory,
          iface: o.interface,
          dhcp: o.dhcp as DhcpMode,
          ...(range ? { range: range as [string, string] } : {}),
          httpPort: Number(o.httpPort),
          ...(o.address ? { address: o.address } : {}),
          db: o.db,
          adminListen: o.adminListen,
          rateLimit: rate,
          ...(o.adminTokenFile ? { adminTokenFile: o.adminTokenFile } : {}),
          ...(o.name ? { name: o.name } : {}),
        });
        // Serve until a signal; the cleanup handlers stop everything.
        await new Promise(() => {});
      },
    );
}
