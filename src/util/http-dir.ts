import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { send, serveFile } from "./http-files.js";

/** A read-only HTTP server for one directory (for `kiln vm --netboot` and tests). */
export async function serveDirectory(
  root: string,
  host = "127.0.0.1",
  port = 0,
): Promise<{ port: number; server: Server; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD")
      return void send(res, 405, "read-only\n", { Allow: "GET, HEAD" });
    const path = new URL(req.url ?? "/", "http://x").pathname.replace(/^\/+/, "");
    void serveFile(req, res, root, path).catch(() => res.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
