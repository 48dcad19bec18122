import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, resolve } from "node:path";
import { isPostgres } from "../fleet/open.js";
import type { FleetStore } from "../fleet/store.js";
import { KilnError } from "../util/errors.js";
import { send } from "../util/http-files.js";
import { cacheDir } from "../util/paths.js";
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

export interface AdminServerOptions {
  token: string;
  reports: ReportReceiver;
  fleet: FleetStore;
  host: string;
  port: number;
}

/**
 * The admin side of `kiln serve`, on its own listener (localhost by
 * default), never on the boot network's: what machines reported and which
 * machines asked, for whoever holds the token.
 */
export class AdminServer {
  private server: Server | undefined;
  private readonly logs = new LogLimiter();

  constructor(private readonly o: AdminServerOptions) {}

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
    const s = this.server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!tokenMatches(req.headers.authorization, this.o.token)) {
      this.logs.line(
        "admin-auth",
        `admin: 401 ${req.method} ${(req.url ?? "").slice(0, 120)} from ${req.socket.remoteAddress}`,
      );
      return void send(res, 401, "admin token needed (Authorization: Bearer TOKEN)\n", {
        "WWW-Authenticate": 'Bearer realm="kiln"',
      });
    }
    if (req.method !== "GET" && req.method !== "HEAD")
      return void send(res, 405, "read-only\n", { Allow: "GET, HEAD" });
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/reports.json") return this.o.reports.writeJson(res);
    if (path === "/machines.json")
      return void send(res, 200, `${JSON.stringify(await this.o.fleet.list(), null, 2)}\n`, {
        "Content-Type": "application/json",
      });
    send(res, 404, "not found (admin: /reports.json, /machines.json)\n");
  }
}
