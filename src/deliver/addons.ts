import { readFileSync, statSync } from "node:fs";
import { realpath } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { basename, dirname, isAbsolute, join } from "node:path";
import type { Attached } from "../fleet/store.js";
import { sha256File } from "../util/hash.js";
import { send, serveFile } from "../util/http-files.js";
import { log } from "../util/log.js";
import { type AddonList, LIST_FILE, parseList, SIG_FILE } from "./addonlist.js";
import {
  type Facts,
  type Inventory,
  invalidFacts,
  normalizeFact,
  selectGroup,
} from "./inventory.js";
import { LogLimiter } from "./limits.js";

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
  const sha256 = sha256File(file);
  hashes.set(file, { key, sha256 });
  return sha256;
}

export class AddonService {
  constructor(
    private readonly inventory: () => Inventory,
    private readonly inventoryDir: string,
    private readonly publicUrl: string,
    /** Per-ask lines are bounded, so a flood of asks cannot flood the journal. */
    private readonly infos: LogLimiter = new LogLimiter(50, 10_000, Date.now, (m) => log.info(m)),
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

  /** The signed list beside the inventory (`kiln addons sign`), re-read when it changes. */
  private signed(): { text: string; sig: Buffer; list: AddonList } | undefined {
    const listFile = join(this.inventoryDir, LIST_FILE);
    const sigFile = join(this.inventoryDir, SIG_FILE);
    let key: string;
    try {
      const a = statSync(listFile);
      const b = statSync(sigFile);
      key = `${a.size}:${a.mtimeMs}:${b.size}:${b.mtimeMs}`;
    } catch {
      return undefined;
    }
    if (this.cache?.key !== key) {
      try {
        const text = readFileSync(listFile, "utf8");
        this.cache = { key, text, sig: readFileSync(sigFile), list: parseList(text) };
      } catch (err) {
        log.warn(`addons: ${listFile}: ${(err as Error).message}; not served`);
        this.cache = { key };
      }
    }
    const c = this.cache;
    return c.list ? { text: c.text!, sig: c.sig!, list: c.list } : undefined;
  }
  private cache?: { key: string; text?: string; sig?: Buffer; list?: AddonList };
  private warnedUnsigned = false;

  /**
   * What a profile is assigned, as the agent would be told: the signed
   * list's entries for it when there is a list (none when the list leaves
   * the profile out), else the inventory's add-on files by NAME_VERSION.raw.
   * For the dashboard; reads no add-on file.
   */
  assigned(profile: string): Attached[] {
    const signed = this.signed();
    if (signed)
      return signed.list.entries
        .filter((e) => e.profile === profile)
        .map((e) => ({ kind: e.kind, name: e.name, version: e.version }));
    return (this.inventory().profiles[profile]?.addons ?? []).map((a) => ({
      kind: a.kind,
      ...addonNameVersion(a.path),
    }));
  }

  /** GET /addons.list and /addons.list.sig: the operator's signed list, byte for byte. */
  signedFile(res: ServerResponse, which: "list" | "sig"): void {
    const s = this.signed();
    if (!s) return void send(res, 404, "no signed add-on list (kiln addons sign)\n");
    if (which === "list") return void send(res, 200, s.text, { "Content-Type": "text/plain" });
    res.setHeader("Content-Type", "application/octet-stream");
    res.end(s.sig);
  }

  /**
   * A machine's assignment: its profile and one line per add-on with where to
   * fetch it. With a signed list, the lines are the list's entries for that
   * profile (the agent acts on nothing else); without one (agents built with
   * agent.insecure_unsigned), the served files' hashes.
   */
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
    // Only a well-formed id goes into the answer (a newline in it would add lines).
    const who = /^[0-9a-f]{32}$/.test(facts.machine_id ?? "")
      ? facts.machine_id!
      : (macs[0] ?? "?");
    const signed = this.signed();
    const profile = group?.profile;
    const lines: string[] = [
      `# kiln assignment for ${who}: group ${group?.name ?? "(none)"}${signed ? `, signed list ${signed.list.serial}` : ", no signed list"}`,
    ];
    const base = `${this.publicUrl}/addons/${profile}`;
    if (profile && signed && !signed.list.profiles.includes(profile)) {
      log.warn(`addons: profile ${profile} is not in the signed list; run kiln addons sign again`);
    } else if (profile && signed) {
      lines.push(`profile ${profile}`);
      for (const e of signed.list.entries.filter((x) => x.profile === profile))
        lines.push(
          `${e.kind} ${e.name} ${e.version} ${base}/${e.name}_${e.version}.raw ${e.sha256}`,
        );
    } else if (profile) {
      if (!this.warnedUnsigned) {
        this.warnedUnsigned = true;
        log.warn(
          `addons: no signed list (${LIST_FILE}) beside the inventory: agents refuse these assignments unless built with agent.insecure_unsigned; run kiln addons sign`,
        );
      }
      lines.push(`profile ${profile}`);
      for (const a of this.inventory().profiles[profile]?.addons ?? []) {
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
        lines.push(`${a.kind} ${name} ${version} ${base}/${basename(file)} ${sha}`);
      }
    }
    this.infos.line(
      "agent",
      `agent: ${who} → ${group ? `group ${group.name}` : "no group"}, ${lines.filter((l) => !/^(#|profile )/.test(l)).length} add-ons`,
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
