import { watch } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { isAbsolute, join, resolve } from "node:path";
import { QueueFull } from "../fleet/batch.js";
import type { Attached, FleetStore } from "../fleet/store.js";
import { SpecError } from "../util/errors.js";
import { send, serveFile } from "../util/http-files.js";
import { log } from "../util/log.js";
import { AddonService } from "./addons.js";
import { BootTokens } from "./boots.js";
import { BundleFactsCache } from "./bundlefacts.js";
import { InstallService } from "./install.js";
import {
  type Facts,
  type Inventory,
  invalidFacts,
  loadInventory,
  normalizeFact,
  selectGroup,
} from "./inventory.js";
import { DEFAULT_LIMITS, LogLimiter, MACHINE_ID, RateLimiter, type ServeLimits } from "./limits.js";
import { ReportReceiver } from "./reports.js";

export interface BootServerOptions {
  inventoryFile: string;
  /** Base URL machines use to reach this server, e.g. http://10.0.0.2:8080 */
  publicUrl: string;
  fleet: FleetStore;
  /** This replica's name in boot and report records (default host:port). */
  serverName?: string;
  host?: string;
  port?: number;
  limits?: Partial<ServeLimits>;
}

const MAX_URL = 2048;
const LABEL = /^[a-z][a-z0-9_-]{0,63}$/;

/** Endpoints a client can hit cheaply and often; artifacts (large, resumed) are not limited. */
const LIMITED =
  /^\/(ipxe|boot\.ipxe|assignment|report|metadata\/.*|cloud-init\/.*|install\/[^/]+\/(plan|progress|result))$/;

/**
 * The boot-network side of `kiln serve`: iPXE scripts per machine from the
 * inventory, the profiles' netboot files (Range, ETag, HEAD), per-boot
 * metadata and cloud-init NoCloud data, and kiln-agent's assignment. Read-only
 * except the agent's `POST /report`, which is bounded (see ReportStore).
 * Every client-facing table is bounded and the small endpoints are rate
 * limited per address (see ServeLimits). The inventory file is watched; an
 * edit that does not load is refused (with file:line:col in the log) and the
 * last good one stays.
 */
export class BootServer {
  private inventory: Inventory;
  private server: Server | undefined;
  private readonly inventoryDir: string;
  private closeWatch: (() => void) | undefined;

  private readonly addons: AddonService;
  private readonly installs: InstallService;
  readonly limits: ServeLimits;
  readonly reports: ReportReceiver;
  private readonly boots: BootTokens;
  private readonly rate: RateLimiter;
  private readonly logs = new LogLimiter();
  private readonly infos = new LogLimiter(50, 10_000, Date.now, (m) => log.info(m));

  constructor(private readonly o: BootServerOptions) {
    this.inventory = loadInventory(o.inventoryFile);
    this.inventoryDir = resolve(o.inventoryFile, "..");
    this.addons = new AddonService(
      () => this.inventory,
      this.inventoryDir,
      o.publicUrl,
      this.infos,
    );
    this.installs = new InstallService(
      o.fleet,
      this.inventoryDir,
      o.publicUrl,
      () => this.serverName,
    );
    const l = { ...DEFAULT_LIMITS, ...o.limits };
    this.limits = l;
    this.reports = new ReportReceiver(o.fleet, l, this.logs, this.serverName);
    this.boots = new BootTokens(l.maxBootTokens, l.bootTokenTtlMs);
    this.rate = new RateLimiter(l.ratePerSecond, l.burst, l.maxAddresses);
  }

  async listen(): Promise<number> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        this.logs.line(
          "http-error",
          `http: ${req.method} ${req.url?.slice(0, 120)}: ${String(err)}`,
        );
        if (!res.headersSent) send(res, 500, "internal error\n");
        else res.destroy();
      });
    });
    this.server.requestTimeout = 30_000;
    this.server.headersTimeout = 10_000;
    this.server.maxConnections = this.limits.maxConnections;
    await new Promise<void>((res, rej) => {
      this.server!.once("error", rej);
      this.server!.listen(this.o.port ?? 8080, this.o.host ?? "0.0.0.0", res);
    });
    this.watchInventory();
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.closeWatch?.();
    const s = this.server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  /** The add-ons the inventory assigns a profile now (signed list or inventory paths): for the dashboard. */
  assigned(profile: string): Attached[] {
    return this.addons.assigned(profile);
  }

  /** Load the inventory again; on error keep the current one. Returns whether it changed. */
  reload(): boolean {
    try {
      this.inventory = loadInventory(this.o.inventoryFile);
      log.info(
        `inventory reloaded: ${this.inventory.groups.length} groups, ${Object.keys(this.inventory.profiles).length} profiles`,
      );
      return true;
    } catch (err) {
      const where = err instanceof SpecError ? err.message : String(err);
      log.warn(`inventory edit refused, still serving the last good one:\n${where}`);
      return false;
    }
  }

  private watchInventory(): void {
    // Editors replace files (rename), which ends an fs.watch on the file, so watch its directory.
    let timer: NodeJS.Timeout | undefined;
    const w = watch(this.inventoryDir, (_event, name) => {
      if (name && !this.o.inventoryFile.endsWith(name.toString())) return;
      clearTimeout(timer);
      timer = setTimeout(() => this.reload(), 200);
    });
    this.closeWatch = () => {
      clearTimeout(timer);
      w.close();
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = req.url ?? "/";
    if (raw.length > MAX_URL) return void this.refuse(req, res, 414, "request too long");
    let url: URL;
    try {
      url = new URL(raw, "http://x");
      decodeURIComponent(url.pathname);
    } catch {
      return void this.refuse(req, res, 400, "malformed request target or percent-escape");
    }
    const path = url.pathname;
    if (LIMITED.test(path)) {
      const r = this.rate.take(req.socket.remoteAddress ?? "");
      if (r === "limited")
        return void this.refuse(req, res, 429, "too many requests", { "Retry-After": "1" }, "rate");
      if (r === "busy")
        return void this.refuse(req, res, 503, "too many clients", { "Retry-After": "5" }, "busy");
    }
    // machine_id is echoed (assignment) and keyed on (reports): nothing but 32 hex digits.
    if (url.searchParams.getAll("machine_id").some((v) => !MACHINE_ID.test(v)))
      return void this.refuse(req, res, 400, "machine_id is 32 hex digits");
    // The writes: kiln-agent reporting what it attached, an installer its progress.
    if (req.method === "POST" && path === "/report") return this.reports.receive(req, res, url);
    const inst = /^\/install\/([^/]+)\/(plan|image\.gz|progress|result)$/.exec(path);
    if (inst) return this.install(req, res, url, inst[1]!, inst[2]!);
    if (req.method !== "GET" && req.method !== "HEAD") {
      return void this.refuse(req, res, 405, "read-only server", { Allow: "GET, HEAD" });
    }
    if (path === "/assignment") return this.addons.assignment(req, res, url);
    if (path === "/addons.list") return this.addons.signedFile(res, "list");
    if (path === "/addons.list.sig") return this.addons.signedFile(res, "sig");
    const a = /^\/addons\/([a-z0-9][a-z0-9._-]*)\/([A-Za-z0-9._-]+\.raw)$/.exec(path);
    if (a) return this.addons.image(req, res, a[1]!, a[2]!);
    if (path === "/boot.ipxe")
      return void send(res, 200, this.chainScript(), { "Content-Type": "text/plain" });
    if (path === "/ipxe") return this.machineScript(req, res, url);
    let m = /^\/artifacts\/([a-z0-9][a-z0-9._-]*)\/(.+)$/.exec(path);
    if (m) {
      const profile = this.inventory.profiles[m[1]!];
      if (!profile?.artifact) return void this.refuse(req, res, 404, `no netboot profile ${m[1]}`);
      const status = await serveFile(req, res, this.artifactDir(profile.artifact), m[2]!);
      if (status === 400)
        this.logs.line(
          "path",
          `http: refused path ${JSON.stringify(m[2]!.slice(0, 120))} from ${req.socket.remoteAddress}`,
        );
      return;
    }
    m = /^\/metadata\/([^/]+)\.json$/.exec(path);
    if (m) return this.metadata(req, res, m[1]!);
    m = /^\/cloud-init\/([^/]+)\/(user-data|meta-data|vendor-data)$/.exec(path);
    if (m)
      return this.cloudInit(req, res, m[1]!, m[2] as "user-data" | "meta-data" | "vendor-data");
    this.refuse(req, res, 404, "not found");
  }

  /** What every iPXE client fetches first: come back with your identity. */
  private chainScript(): string {
    const q = [
      "mac=${netX/mac}",
      "uuid=${uuid}",
      "serial=${serial:uristring}",
      "hostname=${hostname:uristring}",
      "arch=${buildarch}",
      "platform=${platform}",
    ];
    return `#!ipxe\nchain ${this.o.publicUrl}/ipxe?${q.join("&")}\n`;
  }

  private async machineScript(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const facts: Facts = {};
    for (const [k, v] of url.searchParams) {
      if (!LABEL.test(k))
        return void this.refuse(req, res, 400, `bad label ${JSON.stringify(k.slice(0, 40))}`);
      if (v !== "") facts[k] = normalizeFact(k, v);
    }
    const bad = invalidFacts(facts);
    if (bad) return void this.refuse(req, res, 400, bad);
    if (!facts.mac && !facts.uuid) return void this.refuse(req, res, 400, "need mac or uuid");
    const group = selectGroup(this.inventory, facts);
    const id = facts.mac ?? facts.uuid!;
    const profileName = group?.profile ?? null;
    const artifact = profileName ? this.inventory.profiles[profileName]?.artifact : undefined;
    // Answered only once the boot is committed: a server killed after this answer has it on record.
    let recorded: boolean;
    try {
      recorded = await this.o.fleet.recordBoot({
        machine: id,
        facts,
        group: group?.name ?? null,
        profile: profileName,
        artifact: artifact ? this.artifactLabel(artifact) : null,
        server: this.serverName,
      });
    } catch (err) {
      // Too many boots wait for the database already: a flood is shed, not queued without end.
      if (err instanceof QueueFull)
        return void this.refuse(req, res, 503, "busy", { "Retry-After": "1" }, "busy");
      throw err;
    }
    if (!recorded)
      this.logs.line(
        "discovery",
        `discovery: ${this.limits.maxDiscoveryRows} machines recorded already (the cap); ${id} is served but not recorded`,
      );
    if (!group) {
      this.infos.line("boot", `boot: ${id} matches no group`);
      return void send(
        res,
        200,
        `#!ipxe\necho kiln: no profile for this machine (${id}); it has been recorded\nsleep 10\nexit\n`,
      );
    }
    const profile = this.inventory.profiles[group.profile]!;
    // Installed to its disk: it boots from there until a reinstall is asked for.
    if (profile.install && (await this.o.fleet.install(id))?.state === "installed") {
      this.infos.line("boot", `boot: ${id} → group ${group.name}, installed: its own disk`);
      return void send(res, 200, InstallService.localBootScript(id));
    }
    if (!profile.artifact)
      return void send(
        res,
        200,
        `#!ipxe\necho kiln: profile ${group.profile} has nothing to boot\nsleep 10\nexit\n`,
      );
    const base = `${this.o.publicUrl}/artifacts/${group.profile}`;
    const bundleArgs = this.bundleCmdline(profile.artifact);
    const hostname = profile.metadata.hostname;
    // This boot's own metadata and cloud-init: what this request claimed, nobody else's.
    const token = this.boots.issue({ facts, group: group.name, profile: group.profile });
    // UEFI kernels load their initrd through the EFI stub by the name given in initrd=.
    const args = [
      "initrd=initrd.img",
      `kiln.root=${base}/root.squashfs`,
      `kiln.metadata=${this.o.publicUrl}/metadata/${token}.json`,
      ...(profile.cloud_init ? [`ds=nocloud;s=${this.o.publicUrl}/cloud-init/${token}/`] : []),
      ...(profile.install ? [`kiln.install=${this.o.publicUrl}/install/${token}`] : []),
      ...(hostname ? [`systemd.hostname=${hostname}`] : []),
      bundleArgs,
      profile.kernel_args,
    ].filter(Boolean);
    this.infos.line("boot", `boot: ${id} → group ${group.name}, profile ${group.profile}`);
    send(
      res,
      200,
      `#!ipxe\nkernel ${base}/vmlinuz ${args.join(" ")}\ninitrd --name initrd.img ${base}/initrd.img\nboot\n`,
    );
  }

  private async install(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    token: string,
    what: string,
  ): Promise<void> {
    const b = this.boot(token);
    const profile = b ? this.inventory.profiles[b.profile] : undefined;
    if (!b || !profile?.install)
      return void this.refuse(req, res, 404, "no install for this boot (unknown or expired token)");
    const post = what === "progress" || what === "result";
    if (req.method !== (post ? "POST" : "GET") && !(req.method === "HEAD" && !post))
      return void this.refuse(req, res, 405, "wrong method", {
        Allow: post ? "POST" : "GET, HEAD",
      });
    if (what === "plan") return this.installs.plan(res, token, b, profile);
    if (what === "image.gz") return this.installs.stream(req, res, profile);
    // Everything is in the query; a body is not read (the connection closes after the answer).
    if (Number(req.headers["content-length"] ?? "0") > 0) res.setHeader("Connection", "close");
    return this.installs.update(res, url, b, profile, what as "progress" | "result");
  }

  /** The boot a token names, if its group and profile still exist in the inventory. */
  private boot(token: string): { facts: Facts; group: string; profile: string } | undefined {
    const b = this.boots.get(token);
    if (!b || !this.inventory.profiles[b.profile]) return undefined;
    return b;
  }

  private metadata(req: IncomingMessage, res: ServerResponse, token: string): void {
    const b = this.boot(token);
    if (!b) return void this.refuse(req, res, 404, "no such boot (unknown or expired token)");
    const profile = this.inventory.profiles[b.profile]!;
    const body = { machine: b.facts, group: b.group, profile: b.profile, ...profile.metadata };
    send(res, 200, `${JSON.stringify(body, null, 2)}\n`, { "Content-Type": "application/json" });
  }

  private cloudInit(
    req: IncomingMessage,
    res: ServerResponse,
    token: string,
    part: "user-data" | "meta-data" | "vendor-data",
  ): void {
    const b = this.boot(token);
    const profile = b ? this.inventory.profiles[b.profile] : undefined;
    const ci = profile?.cloud_init;
    if (!b || !profile || !ci)
      return void this.refuse(req, res, 404, "no cloud-init data for this boot");
    if (part === "vendor-data") return void send(res, 200, "");
    if (part === "user-data") return void send(res, 200, ci.user_data ?? "#cloud-config\n{}\n");
    const meta = {
      "instance-id": `kiln-${b.facts.mac ?? b.facts.uuid}`,
      "local-hostname": profile.metadata.hostname ?? "",
      ...ci.meta_data,
    };
    send(
      res,
      200,
      `${Object.entries(meta)
        .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
        .join("\n")}\n`,
    );
  }

  private get serverName(): string {
    return this.o.serverName ?? `${this.o.host ?? "0.0.0.0"}:${this.o.port ?? 8080}`;
  }

  private readonly bundles = new BundleFactsCache();

  /** "NAME VERSION" of the build a netboot bundle came from (its manifest.json), else the directory's name. */
  private artifactLabel(artifact: string): string {
    return this.bundles.get(this.artifactDir(artifact)).label;
  }

  private artifactDir(artifact: string): string {
    return isAbsolute(artifact) ? artifact : join(this.inventoryDir, artifact);
  }

  /** Kernel arguments the bundle was built with (console settings), if it recorded them. */
  private bundleCmdline(artifact: string): string {
    return this.bundles.get(this.artifactDir(artifact)).cmdline;
  }

  private refuse(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    why: string,
    headers: Record<string, string> = {},
    kind = "refused",
  ): void {
    this.logs.line(
      kind,
      `http: ${status} ${req.method} ${JSON.stringify((req.url ?? "").slice(0, 120))} from ${req.socket.remoteAddress}: ${why}`,
    );
    // A refused body is not read: the connection ends with the answer.
    send(
      res,
      status,
      `${why}\n`,
      req.method === "POST" ? { Connection: "close", ...headers } : headers,
    );
  }
}
