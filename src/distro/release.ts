import { KilnError } from "../util/errors.js";
import type { AptSource } from "./driver.js";

/** A suite as its mirror publishes it now: the Date of its Release file. */
export interface SuiteState {
  uri: string;
  suite: string;
  date: string;
}

/** A Release file's fields come first; nothing kiln needs lies beyond this. */
const MAX_BYTES = 64 * 1024;
const TIMEOUT_MS = 15_000;

/**
 * The Date of each suite's Release file, read from the first few KB of its
 * InRelease (the download stops there). This is what the cached root is keyed
 * on: a suite that publishes anything gets a new Date, so the cache never
 * serves packages older than the mirror's. Undefined when a mirror cannot be
 * reached (the caller may fall back to a cached root, and says so).
 */
export async function suiteStates(sources: AptSource[]): Promise<SuiteState[] | undefined> {
  try {
    return await Promise.all(sources.map(suiteState));
  } catch (err) {
    if (err instanceof KilnError && err.code === "MIRROR_RELEASE") throw err;
    return undefined;
  }
}

async function suiteState(s: AptSource): Promise<SuiteState> {
  const base = `${s.uri.replace(/\/+$/, "")}/dists/${s.suite}`;
  let text: string | undefined;
  for (const file of ["InRelease", "Release"]) {
    text = await readHead(`${base}/${file}`);
    if (text !== undefined) break;
  }
  if (text === undefined)
    throw new KilnError("MIRROR_RELEASE", `${base} has neither InRelease nor Release`, {
      hint: "check distribution.release, mirror and security_mirror, or set updates/security: false",
    });
  return { uri: s.uri, suite: s.suite, date: parseReleaseHead(text, s.suite, base) };
}

/** The Release fields a suite's state is read from; hostile input is bounded and checked. */
export function parseReleaseHead(text: string, suite: string, where = suite): string {
  const field = (name: string) =>
    new RegExp(`^${name}: *([^\\r\\n]{1,100})$`, "m").exec(text)?.[1]?.trim();
  const names = [field("Suite"), field("Codename")];
  if (!names.includes(suite))
    throw new KilnError(
      "MIRROR_RELEASE",
      `${where}: the Release file is for ${names.filter(Boolean).join("/") || "no suite"}, not ${suite}`,
    );
  const date = field("Date");
  if (!date || Number.isNaN(Date.parse(date)))
    throw new KilnError("MIRROR_RELEASE", `${where}: the Release file has no valid Date`);
  return new Date(Date.parse(date)).toISOString();
}

/** The start of a file over HTTP (at most MAX_BYTES), or undefined on 404. */
async function readHead(url: string): Promise<string | undefined> {
  const ctl = new AbortController();
  const timer = setTimeout(
    () => ctl.abort(new Error(`no answer in ${TIMEOUT_MS / 1000} s`)),
    TIMEOUT_MS,
  );
  try {
    const res = await fetch(url, { signal: ctl.signal });
    if (res.status === 404) return undefined;
    if (!res.ok || !res.body) throw new Error(`GET ${url}: HTTP ${res.status}`);
    const reader = res.body.getReader();
    const chunks: Uint8Array[] = [];
    let got = 0;
    while (got < MAX_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      got += value.length;
      // The checksum lists follow every simple field: stop downloading where they begin.
      if (/\n(MD5Sum|SHA1|SHA256):/.test(Buffer.concat(chunks).toString("latin1"))) break;
    }
    await reader.cancel().catch(() => {});
    return Buffer.concat(chunks).subarray(0, MAX_BYTES).toString("utf8");
  } finally {
    clearTimeout(timer);
  }
}
