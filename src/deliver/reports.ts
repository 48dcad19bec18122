import type { IncomingMessage, ServerResponse } from "node:http";
import type { Attached, FleetStore } from "../fleet/store.js";
import { send } from "../util/http-files.js";
import { type LogLimiter, MACHINE_ID, type ServeLimits } from "./limits.js";

/** What an agent's report says, each field checked; anything else in it is ignored. */
export interface ParsedReport {
  macs: string[];
  attached: Attached[];
  failed: string[];
  ok: boolean;
}

const WORD = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;
const MAX_ATTACHED = 64;
const MAX_FAILED = 8;
const MAX_FAILURE = 200;

/**
 * kiln-agent's report body (assets/kiln-agent): `machine_id ID`, one
 * `mac MAC` per interface, one `KIND NAME VERSION` per attached add-on, one
 * `failed TEXT` per failure of its last round, and `status ok|failed`. Older
 * agents send no status: then it is ok when nothing failed.
 */
export function parseReport(body: string): ParsedReport {
  const macs: string[] = [];
  const attached: Attached[] = [];
  const failed: string[] = [];
  let status: string | undefined;
  for (const line of body.split("\n")) {
    const w = line.trim().split(/\s+/);
    if (w[0] === "mac" && w.length === 2 && MAC.test(w[1]!.toLowerCase())) {
      if (macs.length < 16) macs.push(w[1]!.toLowerCase());
    } else if (
      (w[0] === "portable" || w[0] === "sysext") &&
      w.length === 3 &&
      WORD.test(w[1]!) &&
      WORD.test(w[2]!)
    ) {
      if (attached.length < MAX_ATTACHED)
        attached.push({ kind: w[0], name: w[1]!, version: w[2]! });
    } else if (w[0] === "failed" && w.length > 1) {
      // Shown on a page and in a terminal: printable ASCII only, bounded.
      const text = line
        .trim()
        .slice(7)
        .replace(/[^ -~]/g, "?")
        .slice(0, MAX_FAILURE);
      if (failed.length < MAX_FAILED) failed.push(text);
    } else if (w[0] === "status" && (w[1] === "ok" || w[1] === "failed")) status = w[1];
  }
  return {
    macs,
    attached,
    failed,
    ok: status ? status === "ok" && !failed.length : !failed.length,
  };
}

/**
 * POST /report?machine_id=ID from kiln-agent, into the fleet database. The
 * body is checked against the bounds before it is read (Content-Length) and
 * while it is read (chunked bodies); refused bodies are not read at all; the
 * 204 goes out only once the report is committed.
 */
export class ReportReceiver {
  private inFlight = 0;

  constructor(
    private readonly store: FleetStore,
    private readonly limits: Pick<ServeLimits, "maxReportBytes" | "maxReportsInFlight">,
    private readonly logs: LogLimiter,
    private readonly server: string,
  ) {}

  async receive(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const ids = url.searchParams.getAll("machine_id");
    const id = ids[0] ?? "";
    if (ids.length !== 1 || !MACHINE_ID.test(id))
      return void refuse(res, 400, "need one machine_id of 32 hex digits");
    const declared = Number(req.headers["content-length"] ?? "0");
    if (!Number.isFinite(declared) || declared > this.limits.maxReportBytes)
      return void refuse(res, 413, `report larger than ${this.limits.maxReportBytes} bytes`);
    if (this.inFlight >= this.limits.maxReportsInFlight) {
      this.logs.line(
        "reports-busy",
        `reports: ${this.inFlight} reports already being received; 503 to ${req.socket.remoteAddress}`,
      );
      return void refuse(res, 503, "busy, try later", { "Retry-After": "5" });
    }
    this.inFlight++;
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of req as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > this.limits.maxReportBytes)
          return void refuse(res, 413, `report larger than ${this.limits.maxReportBytes} bytes`);
        chunks.push(chunk);
      }
      const body = Buffer.concat(chunks, size).toString("utf8");
      const r = parseReport(body);
      await this.store.recordReport({
        agent: id,
        machine: await this.store.findMachine(r.macs),
        from: req.socket.remoteAddress ?? "",
        body,
        attached: r.attached,
        failed: r.failed,
        ok: r.ok,
        server: this.server,
      });
      send(res, 204, "");
    } finally {
      this.inFlight--;
    }
  }

  /** The admin listener's /reports.json, written one agent at a time. */
  async writeJson(res: ServerResponse): Promise<void> {
    const rows = await this.store.reports();
    res.statusCode = 200;
    res.setHeader("Content-Type", "application/json");
    // A client that goes away mid-way ends the wait as a drain would.
    const write = (s: string) =>
      res.write(s)
        ? Promise.resolve()
        : new Promise<void>((r) => {
            const done = () => {
              res.off("drain", done);
              res.off("close", done);
              r();
            };
            res.on("drain", done);
            res.on("close", done);
          });
    await write("{");
    let first = true;
    for (const [id, r] of rows) {
      if (res.destroyed) return;
      await write(`${first ? "" : ","}\n  ${JSON.stringify(id)}: ${JSON.stringify(r)}`);
      first = false;
    }
    res.end(first ? "}\n" : "\n}\n");
  }
}

/** Refusals close the connection: whatever body follows is not read. */
function refuse(
  res: ServerResponse,
  status: number,
  why: string,
  headers: Record<string, string> = {},
): void {
  send(res, status, `${why}\n`, { Connection: "close", ...headers });
}
