import type { IncomingMessage, ServerResponse } from "node:http";
import { send } from "../util/http-files.js";
import { type LogLimiter, MACHINE_ID, type ServeLimits } from "./limits.js";

export interface Report {
  at: string;
  from: string;
  state: string;
}

/**
 * The last report of each machine (what its kiln-agent has attached), held in
 * memory with every dimension bounded: machines, bytes per report, bytes in
 * all, age. The Map's insertion order is the order of the last report, so the
 * oldest is always first: a full table drops it (an agent that is still alive
 * reports again at its next round), and a report past its age goes the same way.
 */
export class ReportStore {
  // Bodies are kept as Buffers: outside the JS heap, so a flood's churn does not
  // grow the heap (strings of 60 KiB would be promoted and collected late).
  private readonly byId = new Map<string, { at: string; from: string; body: Buffer; ms: number }>();
  private bytes = 0;
  private inFlight = 0;

  constructor(
    private readonly limits: Pick<
      ServeLimits,
      | "maxReports"
      | "maxReportBytes"
      | "maxReportTotalBytes"
      | "maxReportAgeMs"
      | "maxReportsInFlight"
    >,
    private readonly logs: LogLimiter,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.byId.size;
  }

  get totalBytes(): number {
    return this.bytes;
  }

  get(id: string): Report | undefined {
    this.expire();
    const r = this.byId.get(id);
    return r && { at: r.at, from: r.from, state: r.body.toString("utf8") };
  }

  /** Keep `state` as machine `id`'s last report; returns what was dropped to make room. */
  put(id: string, from: string, state: string | Buffer): number {
    const body = typeof state === "string" ? Buffer.from(state) : state;
    const t = this.now();
    const old = this.byId.get(id);
    if (old) {
      this.byId.delete(id);
      this.bytes -= old.body.length;
    }
    const size = body.length;
    this.expire();
    let dropped = 0;
    while (
      this.byId.size > 0 &&
      (this.byId.size >= this.limits.maxReports ||
        this.bytes + size > this.limits.maxReportTotalBytes)
    ) {
      const [first, r] = this.byId.entries().next().value!;
      this.byId.delete(first);
      this.bytes -= r.body.length;
      dropped++;
    }
    if (dropped)
      this.logs.line(
        "reports",
        `reports: full (${this.limits.maxReports} machines, ${this.limits.maxReportTotalBytes} bytes): dropped the ${dropped} oldest`,
      );
    this.byId.set(id, { at: new Date(t).toISOString(), from, body, ms: t });
    this.bytes += size;
    return dropped;
  }

  /** All kept reports, oldest first. */
  *entries(): IterableIterator<[string, Report]> {
    this.expire();
    for (const [id, r] of this.byId)
      yield [id, { at: r.at, from: r.from, state: r.body.toString("utf8") }];
  }

  private expire(): void {
    const cutoff = this.now() - this.limits.maxReportAgeMs;
    for (const [id, r] of this.byId) {
      if (r.ms >= cutoff) break;
      this.byId.delete(id);
      this.bytes -= r.body.length;
    }
  }

  /**
   * POST /report?machine_id=ID from kiln-agent. The body is checked against
   * the bounds before it is read (Content-Length) and while it is read
   * (chunked bodies); refused bodies are not read at all.
   */
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
      // concat copies, so a kept report holds no slice of a larger socket buffer.
      this.put(id, req.socket.remoteAddress ?? "", Buffer.concat(chunks, size));
      send(res, 204, "");
    } finally {
      this.inFlight--;
    }
  }

  /** The admin listener's /reports.json, written one machine at a time (no whole-table string). */
  async writeJson(res: ServerResponse): Promise<void> {
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
    for (const [id, r] of [...this.entries()]) {
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
