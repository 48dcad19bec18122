import { createPrivateKey, createPublicKey, sign, verify } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, rename, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import { KilnError } from "../util/errors.js";
import { sha256File } from "../util/hash.js";
import { addonNameVersion } from "./addons.js";
import { loadInventory } from "./inventory.js";

/**
 * The signed add-on list: what the operator allows each profile to run, in
 * the spirit of systemd-sysupdate's SHA256SUMS + SHA256SUMS.gpg. Signed
 * offline (`kiln addons sign`), served unchanged by `kiln serve`, verified
 * by kiln-agent with `openssl dgst -sha256 -verify` against the public key
 * baked into its image. The signature is a DER ECDSA (P-256, SHA-256)
 * signature over the list's bytes, which is what openssl expects.
 *
 *   kiln-addons 1
 *   serial 20261202010203        (only ever grows; agents refuse a lower one)
 *   profile fleet                (every profile, also those without add-ons)
 *   addon fleet portable web 2.0.0 <sha256>
 *
 * The agent parses this with a POSIX sh `read`; the rules here and in
 * assets/kiln-agent/kiln-agent are the same and must stay so.
 */
export const LIST_FILE = "addons.list";
export const SIG_FILE = "addons.list.sig";
/** Bounds the agent enforces too: one line, the whole list. */
export const MAX_LINE = 512;
export const MAX_LIST = 1024 * 1024;

const WORD = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const SHA = /^[0-9a-f]{64}$/;
const SERIAL = /^[0-9]{1,18}$/;

export type AddonKind = "portable" | "sysext";
export interface SignedEntry {
  profile: string;
  kind: AddonKind;
  name: string;
  version: string;
  sha256: string;
}
export interface AddonList {
  serial: string;
  profiles: string[];
  entries: SignedEntry[];
}

function bad(message: string, line?: number): KilnError {
  return new KilnError("ADDON_LIST_INVALID", line ? `line ${line}: ${message}` : message, {
    hint: "make the list with `kiln addons sign INVENTORY --key KEY`; do not edit it by hand",
  });
}

export function formatList(l: AddonList): string {
  const out = ["kiln-addons 1", `serial ${l.serial}`];
  for (const p of l.profiles) out.push(`profile ${p}`);
  for (const e of l.entries)
    out.push(`addon ${e.profile} ${e.kind} ${e.name} ${e.version} ${e.sha256}`);
  const text = `${out.join("\n")}\n`;
  parseList(text); // what we sign, the agent must accept
  return text;
}

/** Parse and check every field, as strictly as the agent does. */
export function parseList(text: string): AddonList {
  if (Buffer.byteLength(text) > MAX_LIST) throw bad(`longer than ${MAX_LIST} bytes`);
  if (/[^\n -~]/.test(text)) throw bad("holds control or non-ASCII characters");
  if (!text.endsWith("\n")) throw bad("does not end with a newline");
  const lines = text.slice(0, -1).split("\n");
  const l: AddonList = { serial: "", profiles: [], entries: [] };
  lines.forEach((line, i) => {
    const n = i + 1;
    if (line.length > MAX_LINE) throw bad(`longer than ${MAX_LINE} characters`, n);
    const f = line.split(" ");
    if (n === 1) {
      if (line !== "kiln-addons 1") throw bad("not a kiln add-on list (kiln-addons 1)", n);
    } else if (n === 2) {
      if (f.length !== 2 || f[0] !== "serial" || !SERIAL.test(f[1]!))
        throw bad("the second line must be `serial N` (up to 18 digits)", n);
      l.serial = f[1]!;
    } else if (f[0] === "profile" && f.length === 2 && WORD.test(f[1]!)) {
      l.profiles.push(f[1]!);
    } else if (f[0] === "addon" && f.length === 6) {
      const [, profile, kind, name, version, sha256] = f as [string, ...string[]];
      if (!l.profiles.includes(profile!)) throw bad(`profile ${profile} is not declared`, n);
      if (kind !== "portable" && kind !== "sysext") throw bad(`kind ${kind}`, n);
      if (!WORD.test(name!) || !WORD.test(version!)) throw bad("malformed name or version", n);
      if (!SHA.test(sha256!)) throw bad("sha256 is not 64 hex digits", n);
      l.entries.push({ profile: profile!, kind, name: name!, version: version!, sha256: sha256! });
    } else throw bad("not `profile P` or `addon P KIND NAME VERSION SHA256`", n);
  });
  if (!l.serial) throw bad("no serial");
  return l;
}

export function signList(text: string, keyPem: string | Buffer): Buffer {
  return sign("sha256", Buffer.from(text), createPrivateKey(keyPem));
}

export function verifyList(text: string | Buffer, sig: Buffer, pubPem: string | Buffer): boolean {
  try {
    return verify("sha256", Buffer.from(text), createPublicKey(pubPem), sig);
  } catch {
    return false;
  }
}

/** A serial from the clock (UTC, to the second), above `previous` if the clock is not. */
export function nextSerial(previous?: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:T]/g, "").slice(0, 14);
  return previous && BigInt(previous) >= BigInt(stamp) ? String(BigInt(previous) + 1n) : stamp;
}

/**
 * Sign what the inventory hands out: hash every add-on file (a `sha256:` pin
 * must agree with the file), write the list and its signature beside the
 * inventory (or into `outDir`). The serial grows past the previous list's.
 */
export async function signInventory(
  inventoryFile: string,
  keyFile: string,
  o: { outDir?: string; serial?: string } = {},
): Promise<{ list: string; sig: string; serial: string; entries: number }> {
  const inv = loadInventory(inventoryFile);
  const dir = dirname(inventoryFile);
  const outDir = o.outDir ?? dir;
  const listFile = join(outDir, LIST_FILE);
  const sigFile = join(outDir, SIG_FILE);
  if (!existsSync(keyFile))
    throw new KilnError("ADDON_KEY", `no signing key ${keyFile}`, {
      hint: "make one with `kiln keys addons DIR` (addons.key.pem; addons.pub.pem goes into agent.keyring)",
    });
  const key = readFileSync(keyFile);
  let previous: string | undefined;
  try {
    previous = parseList(readFileSync(listFile, "utf8")).serial;
  } catch {
    previous = undefined;
  }
  if (o.serial !== undefined && !SERIAL.test(o.serial))
    throw new KilnError("ADDON_SERIAL", `serial ${o.serial} is not 1 to 18 digits`);
  if (o.serial !== undefined && previous && BigInt(o.serial) <= BigInt(previous))
    throw new KilnError("ADDON_SERIAL", `serial ${o.serial} is not above ${previous}`, {
      hint: "agents that saw the previous list refuse a lower or equal serial; leave --serial out",
    });
  const list: AddonList = { serial: o.serial ?? nextSerial(previous), profiles: [], entries: [] };
  for (const [profile, p] of Object.entries(inv.profiles)) {
    list.profiles.push(profile);
    for (const a of p.addons) {
      const file = isAbsolute(a.path) ? a.path : join(dir, a.path);
      let sha256: string;
      try {
        sha256 = await sha256File(file);
      } catch {
        throw new KilnError("ADDON_MISSING", `${file} (profile ${profile}) cannot be read`, {
          hint: "build it first, or fix its path in the inventory",
        });
      }
      if (a.sha256 && a.sha256 !== sha256)
        throw new KilnError(
          "ADDON_PIN",
          `${file}: sha256 ${sha256}, but the inventory pins ${a.sha256}`,
        );
      list.entries.push({ profile, kind: a.kind, ...addonNameVersion(file), sha256 });
    }
  }
  const text = formatList(list);
  await mkdir(outDir, { recursive: true });
  // The list goes last: an agent that fetches between the two renames gets a
  // mismatching pair, refuses it (logged) and takes the new pair next round.
  await writeFile(`${sigFile}.tmp`, signList(text, key));
  await writeFile(`${listFile}.tmp`, text);
  await rename(`${sigFile}.tmp`, sigFile);
  await rename(`${listFile}.tmp`, listFile);
  return { list: listFile, sig: sigFile, serial: list.serial, entries: list.entries.length };
}
