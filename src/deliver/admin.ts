import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, resolve } from "node:path";
import { isPostgres } from "../fleet/open.js";
import type { Attached, FleetStore } from "../fleet/store.js";
import { KilnError } from "../util/errors.js";
import { send } from "../util/http-files.js";
import { cacheDir } from "../util/paths.js";
import {
  DASHBOARD_CSS,
  DASHBOARD_JS,
  renderFleetFragment,
  renderFleetPage,
  renderLoginPage,
  renderMachineFragment,
  renderMachinePage,
  renderMessagePage,
} from "./dashboard.js";
import { LogLimiter } from "./limits.js";
import type { ReportReceiver } from "./reports.js";

const TOKEN = /^[A-Za-z0-9_-]{43}$/;

/**
 * Where `kiln serve` keeps the admin token of the database `db`: beside a
 * SQLite file; for PostgreSQL in kiln's cache (give every replica the same
 * file with --admin-token-file to use one token for all).
 */
export function adminTokenFile(db: string): string {
  return isPostgres(db) ? cacheDir("postgres.admin-token") : `${resolve(db)}.admin-token`;
}

/**
 * The admin token: made on first start (256 random bits), stored 0600 beside
 * the database, read again on later starts. A token file that others can
 * read, or that holds something else, is refused rather than used.
 */
export function loadOrCreateAdminToken(file: string): string {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  let fd: number;
  try {
    fd = openSync(file, "wx", 0o600);
    const token = randomBytes(32).toString("base64url");
    writeSync(fd, `${token}\n`);
    closeSync(fd);
    return token;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  fd = openSync(file, "r");
  try {
    const st = fstatSync(fd);
    if ((st.mode & 0o077) !== 0 || (process.getuid && st.uid !== process.getuid()))
      throw new KilnError(
        "SERVE_ADMIN_TOKEN_MODE",
        `${file} is readable by others (mode ${(st.mode & 0o777).toString(8)}) or not ours`,
        { hint: `chmod 600 ${file} (or delete it to make a new token)` },
      );
    const token = readFileSync(fd, "utf8").trim();
    if (!TOKEN.test(token))
      throw new KilnError("SERVE_ADMIN_TOKEN_BAD", `${file} does not hold a kiln admin token`, {
        hint: `delete ${file}; kiln serve makes a new one`,
      });
    return token;
  } finally {
    closeSync(fd);
  }
}

/** Bearer token check in constant time (both sides hashed, so lengths never differ). */
export function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer ([^\s]+)$/.exec(header ?? "");
  const given = createHash("sha256")
    .update(m?.[1] ?? "")
    .digest();
  const want = createHash("sha256").update(token).digest();
  return timingSafeEqual(given, want) && m !== null;
}

/** The dashboard's session cookie. */
export const SESSION_COOKIE = "kiln_admin";
/** How long a login lasts (the cookie's Max-Age and the expiry signed into it). */
export const SESSION_MS = 12 * 3600_000;
/** POST bodies on the admin listener (the login form) are at most this long. */
export const MAX_FORM_BYTES = 4096;

function sessionMac(token: string, expires: number): string {
  return createHmac("sha256", token)
    .update(`kiln-dashboard-session v1 ${expires}`)
    .digest("base64url");
}

/**
 * A session cookie's value: an expiry (Unix seconds) and an HMAC-SHA256 of it
 * keyed by the admin token, never the token itself. The browser so never
 * holds the token (which also opens /reports.json to scripts and other
 * replicas' listeners for as long as it lives): a copied cookie opens the
 * dashboard until it expires, and a new token ends every session.
 */
export function sessionCookie(token: string, now = Date.now()): string {
  const expires = Math.floor((now + SESSION_MS) / 1000);
  return `v1.${expires}.${sessionMac(token, expires)}`;
}

function cookie(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? "").split(";")) {
    const i = part.indexOf("=");
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/** The Cookie header holds a session made with this token that has not expired (constant time). */
export function sessionMatches(
  cookieHeader: string | undefined,
  token: string,
  now = Date.now(),
): boolean {
  const m = /^v1\.(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(
    cookie(cookieHeader, SESSION_COOKIE) ?? "",
  );
  const expires = Number(m?.[1] ?? 0);
  const given = createHash("sha256")
    .update(m?.[2] ?? "")
    .digest();
  const want = createHash("sha256").update(sessionMac(token, expires)).digest();
  return timingSafeEqual(given, want) && m !== null && expires * 1000 > now;
}

/**
 * Server-sent events of the fleet's change counter: one poller per admin
 * server (fleet.version() about once a second), running only while a client
 * is connected, shared by all of them; a heartbeat comment keeps idle
 * proxies and browsers from giving up. Clients are bounded (the caller
 * answers 503 beyond), and one that stops reading is dropped.
 */
export class VersionEvents {
  private readonly clients = new Set<ServerResponse>();
  private poll: NodeJS.Timeout | undefined;
  private beat: NodeJS.Timeout | undefined;
  private last: string | undefined;
  private polling = false;
  /** fleet.version() calls made (for tests: one poller, not one per client). */
  polls = 0;

  constructor(
    private readonly version: () => Promise<string>,
    private readonly o: { maxClients: number; pollMs: number; heartbeatMs: number },
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  get size(): number {
    return this.clients.size;
  }

  get running(): boolean {
    return this.poll !== undefined;
  }

  /** Take `res` as a stream; false when full (nothing written). */
  add(res: ServerResponse): boolean {
    if (this.clients.size >= this.o.maxClients) return false;
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-store",
      "X-Accel-Buffering": "no",
    });
    res.write("retry: 2000\n\n");
    this.clients.add(res);
    res.on("close", () => this.remove(res));
    // The new client learns the current version at once (it may differ from its page's).
    if (this.last !== undefined) this.write(res, this.message(this.last));
    if (!this.poll) {
      this.poll = setInterval(() => void this.tick(), this.o.pollMs);
      this.beat = setInterval(() => this.broadcast(": heartbeat\n\n"), this.o.heartbeatMs);
      void this.tick();
    }
    return true;
  }

  close(): void {
    for (const c of this.clients) c.end();
    this.clients.clear();
    this.stop();
  }

  private remove(res: ServerResponse): void {
    this.clients.delete(res);
    if (!this.clients.size) this.stop();
  }

  private stop(): void {
    clearInterval(this.poll);
    clearInterval(this.beat);
    this.poll = this.beat = undefined;
    this.last = undefined;
  }

  private message(v: string): string {
    return `event: version\ndata: ${v.replace(/[\r\n]/g, "")}\n\n`;
  }

  private async tick(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      this.polls++;
      const v = await this.version();
      if (v !== this.last && this.poll) {
        this.last = v;
        this.broadcast(this.message(v));
      }
    } catch (err) {
      this.onError(err);
    } finally {
      this.polling = false;
    }
  }

  private broadcast(s: string): void {
    for (const c of this.clients) this.write(c, s);
  }

  private write(res: ServerResponse, s: string): void {
    // A client that does not read gets dropped rather than buffered for.
    if (res.writableLength > 64 * 1024) return void res.destroy();
    res.write(s);
  }
}

export interface AdminServerOptions {
  token: string;
  reports: ReportReceiver;
  fleet: FleetStore;
  host: string;
  port: number;
  /** What the inventory assigns a profile (BootServer.assigned); default nothing. */
  assigned?: (profile: string) => Attached[];
  /** Server-sent-event clients at once (default 32; 503 beyond). */
  maxEventClients?: number;
  /** How often the shared poller asks fleet.version() (default 1000 ms). */
  pollMs?: number;
  /** Heartbeat comments on /events (default 15 s). */
  heartbeatMs?: number;
}

const MAX_URL = 2048;

/** The pages load only what this listener serves; no inline script, no frames, forms post here. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const HTML = {
  "Content-Type": "text/html; charset=utf-8",
  "Cache-Control": "no-store",
  "Content-Security-Policy": CSP,
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  // Not no-referrer: with it, browsers send "Origin: null" on the login form, refused below.
  "Referrer-Policy": "same-origin",
};

/**
 * The admin side of `kiln serve`, on its own listener (localhost by
 * default), never on the boot network's: what machines reported and which
 * machines asked, for whoever holds the token, as JSON (Bearer) and as the
 * machines dashboard (Bearer or the session cookie of a login with it).
 */
export class AdminServer {
  private server: Server | undefined;
  private readonly logs = new LogLimiter();
  readonly events: VersionEvents;

  constructor(private readonly o: AdminServerOptions) {
    this.events = new VersionEvents(
      () => o.fleet.version(),
      {
        maxClients: o.maxEventClients ?? 32,
        pollMs: o.pollMs ?? 1000,
        heartbeatMs: o.heartbeatMs ?? 15_000,
      },
      (err) => this.logs.line("admin-events", `admin: fleet version: ${String(err)}`),
    );
  }

  async listen(): Promise<number> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        this.logs.line("admin", `admin: ${req.method} ${req.url?.slice(0, 120)}: ${String(err)}`);
        if (!res.headersSent) send(res, 500, "internal error\n");
        else res.destroy();
      });
    });
    this.server.requestTimeout = 30_000;
    this.server.headersTimeout = 10_000;
    this.server.maxConnections = 64;
    await new Promise<void>((res, rej) => {
      this.server!.once("error", rej);
      this.server!.listen(this.o.port, this.o.host, res);
    });
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.events.close();
    const s = this.server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  private assigned = (profile: string): Attached[] => this.o.assigned?.(profile) ?? [];

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = req.url ?? "/";
    let url: URL;
    try {
      if (raw.length > MAX_URL) throw new Error("long");
      url = new URL(raw, "http://x");
    } catch {
      return void send(res, 400, "malformed or overlong request target\n");
    }
    const path = url.pathname;
    const get = req.method === "GET" || req.method === "HEAD";
    // Static, the same for everyone, no fleet data: the login page uses them too.
    if (get && path === "/dashboard.css")
      return void send(res, 200, DASHBOARD_CSS, {
        "Content-Type": "text/css; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
      });
    if (get && path === "/dashboard.js")
      return void send(res, 200, DASHBOARD_JS, {
        "Content-Type": "text/javascript; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
      });
    if (req.method === "POST" && (path === "/login" || path === "/logout"))
      return this.loginOrOut(req, res, path);
    const page = path === "/" || path.startsWith("/machines/");
    if (
      !tokenMatches(req.headers.authorization, this.o.token) &&
      !sessionMatches(req.headers.cookie, this.o.token)
    ) {
      this.logs.line(
        "admin-auth",
        `admin: 401 ${req.method} ${raw.slice(0, 120)} from ${req.socket.remoteAddress}`,
      );
      if (page && get && url.searchParams.get("fragment") === null)
        return void send(res, 401, renderLoginPage(), {
          ...HTML,
          "WWW-Authenticate": 'Bearer realm="kiln"',
        });
      return void send(res, 401, "admin token needed (Authorization: Bearer TOKEN)\n", {
        "WWW-Authenticate": 'Bearer realm="kiln"',
      });
    }
    const re = /^\/machines\/([^/]{1,512})\/reinstall$/.exec(path);
    if (req.method === "POST" && re) return this.reinstall(req, res, re[1]!);
    if (!get) return void send(res, 405, "read-only\n", { Allow: "GET, HEAD" });
    if (path === "/reports.json") return this.o.reports.writeJson(res);
    if (path === "/machines.json")
      return void send(res, 200, `${JSON.stringify(await this.o.fleet.list(), null, 2)}\n`, {
        "Content-Type": "application/json",
      });
    if (path === "/events") {
      if (req.method !== "GET") return void send(res, 405, "GET only\n", { Allow: "GET" });
      if (!this.events.add(res))
        send(res, 503, "too many dashboard clients\n", { "Retry-After": "10" });
      return;
    }
    const fragment = url.searchParams.get("fragment") !== null;
    if (path === "/") {
      // The version first: a write in between makes the page older than its data, never newer.
      const version = await this.o.fleet.version();
      const machines = await this.o.fleet.list();
      return void send(
        res,
        200,
        fragment
          ? renderFleetFragment(machines, this.assigned)
          : renderFleetPage(machines, this.assigned, version),
        { ...HTML, "X-Kiln-Version": version },
      );
    }
    const m = /^\/machines\/([^/]{1,512})$/.exec(path);
    if (m) {
      let id: string;
      try {
        id = decodeURIComponent(m[1]!);
      } catch {
        return void send(res, 400, "malformed percent-escape\n");
      }
      const version = await this.o.fleet.version();
      const detail = await this.o.fleet.get(id);
      if (!detail)
        return void send(
          res,
          404,
          renderMessagePage("not found", `No machine ${id} in the fleet.`),
          HTML,
        );
      return void send(
        res,
        200,
        fragment
          ? renderMachineFragment(detail, this.assigned)
          : renderMachinePage(detail, this.assigned, version),
        { ...HTML, "X-Kiln-Version": version },
      );
    }
    send(res, 404, "not found (admin: /, /machines/ID, /events, /reports.json, /machines.json)\n");
  }

  /** A form another site's page posted (SameSite=Strict covers the cookie; this, the form). */
  private crossOrigin(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    const site = req.headers["sec-fetch-site"];
    return (
      (origin !== undefined && origin !== `http://${req.headers.host}`) ||
      (site !== undefined && site !== "same-origin" && site !== "none")
    );
  }

  /** POST /machines/ID/reinstall (the machine page's button): install again at the next boot. */
  private async reinstall(req: IncomingMessage, res: ServerResponse, raw: string): Promise<void> {
    if (this.crossOrigin(req))
      return void send(res, 403, "cross-origin form\n", { Connection: "close" });
    let id: string;
    try {
      id = decodeURIComponent(raw);
    } catch {
      return void send(res, 400, "malformed percent-escape\n");
    }
    if (!(await this.o.fleet.get(id)))
      return void send(
        res,
        404,
        renderMessagePage("not found", `No machine ${id} in the fleet.`),
        HTML,
      );
    await this.o.fleet.resetInstall(id, "dashboard");
    // Nothing of the request body is needed; the connection closes after the answer.
    send(res, 303, "", { Location: `/machines/${encodeURIComponent(id)}`, Connection: "close" });
  }

  /** POST /login (the form's token → session cookie) and POST /logout. */
  private async loginOrOut(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (this.crossOrigin(req))
      return void send(res, 403, "cross-origin form\n", { Connection: "close" });
    if (path === "/logout")
      return void send(res, 303, "", {
        Location: "/",
        "Set-Cookie": `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`,
      });
    const declared = Number(req.headers["content-length"] ?? "0");
    if (!Number.isFinite(declared) || declared > MAX_FORM_BYTES)
      return void send(res, 413, `form larger than ${MAX_FORM_BYTES} bytes\n`, {
        Connection: "close",
      });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_FORM_BYTES)
        return void send(res, 413, `form larger than ${MAX_FORM_BYTES} bytes\n`, {
          Connection: "close",
        });
      chunks.push(chunk);
    }
    const given = new URLSearchParams(Buffer.concat(chunks).toString("utf8")).get("token") ?? "";
    if (!tokenMatches(`Bearer ${given.trim()}`, this.o.token)) {
      this.logs.line(
        "admin-auth",
        `admin: 401 login with a wrong token from ${req.socket.remoteAddress}`,
      );
      return void send(res, 401, renderLoginPage("That is not the admin token."), HTML);
    }
    send(res, 303, "", {
      Location: "/",
      "Cache-Control": "no-store",
      "Set-Cookie": `${SESSION_COOKIE}=${sessionCookie(this.o.token)}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_MS / 1000}`,
    });
  }
}
