import { createHash } from "node:crypto";
import { createReadStream, statSync } from "node:fs";
import { realpath } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { basename, dirname, isAbsolute, join } from "node:path";
import { send, serveFile } from "../util/http-files.js";
import { log } from "../util/log.js";
import {
  type Facts,
  type Inventory,
  invalidFacts,
  normalizeFact,
  selectGroup,
} from "./inventory.js";

/**
 * The side of `kiln serve` that kiln-agent talks to: which add-ons a machine
 * gets (its group's profile's `addons`) and the images themselves (what
 * machines report back is kept by ReportStore, in reports.ts).
 */
/** NAME_VERSION.raw → name and version (names may hold '-', versions '.', neither '_'). */
export function addonNameVersion(path: string): { name: string; version: string } {
  const m = /^([A-Za-z0-9.-]+)_([A-Za-z0-9.-]+)\.raw$/.exec(basename(path))!;
  return { name: m[1]!, version: m[2]! };
}

const hashes = new Map<string, { key: string; sha256: Promise<string> }>();

/** sha256 of a file, cached until its size or mtime changes (images are rebuilt in place). */
function sha256Of(file: string): Promise<string> {
  const st = statSync(file);
  const key = `${st.size}:${st.mtimeMs}`;
  const hit = hashes.get(file);
  if (hit?.key === key) return hit.sha256;
  const sha256 = new Promise<string>((res, rej) => {
    const h = createHash("sha256");
    createReadStream(file)
      .on("data", (b) => h.update(b))
      .on("end", () => res(h.digest("hex")))
      .on("error", rej);
  });
  hashes.set(file, { key, sha256 });
  return sha256;
}

export class AddonService {
  constructor(
    private readonly inventory: () => Inventory,
    private readonly inventoryDir: string,
    private readonly publicUrl: string,
  ) {}

  private file(path: string): string {
    return isAbsolute(path) ? path : join(this.inventoryDir, path);
  }

  /** The group for the machine's facts; with several MACs, the most specific match of any. */
  select(facts: Facts, macs: string[]): ReturnType<typeof selectGroup> {
    let best: ReturnType<typeof selectGroup>;
    for (const mac of macs.length ? macs : [undefined]) {
      const g = selectGroup(this.inventory(), { ...facts, ...(mac ? { mac } : {}) });
      if (g && (!best || Object.keys(g.selector).length > Object.keys(best.selector).length))
        best = g;
    }
    return best;
  }

  async assignment(_req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const facts: Facts = {};
    const macs: string[] = [];
    for (const [k, v] of url.searchParams) {
      if (v === "") continue;
      if (k === "mac") macs.push(normalizeFact("mac", v));
      else if (/^[a-z][a-z0-9_-]{0,63}$/.test(k)) facts[k] = v.trim();
    }
    const bad = [...macs.map((mac) => invalidFacts({ mac })), invalidFacts(facts)].find(Boolean);
    if (bad) return void send(res, 400, `${bad}\n`);
    const group = this.select(facts, macs);
    const who = facts.machine_id ?? macs[0] ?? "?";
    const addons = group ? (this.inventory().profiles[group.profile]?.addons ?? []) : [];
    const lines: string[] = [`# kiln assignment for ${who}: group ${group?.name ?? "(none)"}`];
    for (const a of addons) {
      const file = this.file(a.path);
      const { name, version } = addonNameVersion(file);
      let sha: string;
      try {
        // A pinned hash is passed on as is: if the file has changed since, agents refuse it.
        sha = a.sha256 ?? (await sha256Of(file));
      } catch {
        log.warn(`addons: ${file} is missing; left out of ${who}'s assignment`);
        continue;
      }
      lines.push(
        `${a.kind} ${name} ${version} ${this.publicUrl}/addons/${group!.profile}/${basename(file)} ${sha}`,
      );
    }
    log.info(
      `agent: ${who} → ${group ? `group ${group.name}` : "no group"}, ${lines.length - 1} add-ons`,
    );
    send(res, 200, `${lines.join("\n")}\n`, { "Content-Type": "text/plain" });
  }

  async image(
    req: IncomingMessage,
    res: ServerResponse,
    profile: string,
    name: string,
  ): Promise<void> {
    const p = this.inventory().profiles[profile];
    const a = p?.addons.find((x) => basename(x.path) === name);
    if (!a) return void send(res, 404, "no such add-on\n");
    // The inventory names this file itself, so a link there is the operator's choice.
    const file = await realpath(this.file(a.path)).catch(() => this.file(a.path));
    await serveFile(req, res, dirname(file), basename(file));
  }
}
