import { readFileSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { ExecError, exec } from "../util/exec.js";
import { removeTree } from "../util/fsx.js";
import { scratchDir } from "../util/paths.js";

/** A registry image: HOST[:PORT]/REPO and a tag, or a digest to fetch by. */
export interface RegistryRef {
  host: string;
  /** HOST/REPO, as skopeo and `docker pull` spell it. */
  repo: string;
  tag?: string;
  digest?: string;
}

const HOST = /^(?:[a-zA-Z0-9.-]+|\[[0-9a-fA-F:]+\])(?::\d+)?$/;
const PATH = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/**
 * `HOST/REPO[:TAG][@sha256:HEX]`, with or without `docker://` or `oci://`
 * in front. The host is required (kiln never guesses Docker Hub): its
 * first part has a dot or a port, or is localhost.
 */
export function parseRegistryRef(text: string): RegistryRef {
  const bare = text.replace(/^(docker|oci):\/\//, "");
  const fail = (why: string) =>
    new KilnError("PUSH_REF", `${text}: ${why}`, {
      hint: "write it as HOST[:PORT]/REPO[:TAG], e.g. localhost:5000/kiln/minimal:1.0",
    });
  const [nameTag, digest, ...more] = bare.split("@");
  if (more.length) throw fail("more than one @");
  if (digest !== undefined && !/^sha256:[0-9a-f]{64}$/.test(digest))
    throw fail("the digest after @ is not sha256:HEX");
  const slash = nameTag!.indexOf("/");
  if (slash < 0) throw fail("no registry host");
  const host = nameTag!.slice(0, slash);
  if (!HOST.test(host) || !(/[.:[]/.test(host) || host === "localhost"))
    throw fail(`"${host}" is not a registry host (it needs a dot, a port, or to be localhost)`);
  let path = nameTag!.slice(slash + 1);
  let tag: string | undefined;
  const colon = path.lastIndexOf(":");
  if (colon > path.lastIndexOf("/")) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!TAG.test(tag)) throw fail(`"${tag}" is not a tag (letters, digits, _ . -; 128 at most)`);
  }
  if (!PATH.test(path)) throw fail(`"${path}" is not a repository path (lower case, / separated)`);
  return {
    host,
    repo: `${host}/${path}`,
    ...(tag ? { tag } : {}),
    ...(digest ? { digest } : {}),
  };
}

export const refText = (r: RegistryRef) =>
  `${r.repo}${r.tag ? `:${r.tag}` : ""}${r.digest ? `@${r.digest}` : ""}`;

export interface Access {
  /** Require HTTPS and a verified certificate (false for a plain-HTTP registry on loopback). */
  tlsVerify: boolean;
  /** An auth file in skopeo's format (`skopeo login --authfile`, docker's config.json). */
  authfile?: string;
}

/** Access from the command line: --insecure wins over --tls-verify (commander's "true"/"false"). */
export function accessFrom(o: {
  insecure?: boolean;
  tlsVerify: string;
  authfile?: string;
}): Access {
  if (o.tlsVerify !== "true" && o.tlsVerify !== "false")
    throw new KilnError("USAGE", `--tls-verify takes true or false, not ${o.tlsVerify}`);
  return {
    tlsVerify: !o.insecure && o.tlsVerify === "true",
    ...(o.authfile ? { authfile: o.authfile } : {}),
  };
}

/**
 * Run `fn` with the auth file that carries credentials to skopeo: the
 * one given or, from KILN_REGISTRY_CREDS=USER:PASSWORD, a private
 * one written for this run and removed after. The password is never on a
 * command line, so neither `ps` nor `--debug` shows it.
 */
export async function withCredentials<T>(
  host: string,
  access: Access,
  fn: (authfile: string | undefined) => Promise<T>,
): Promise<T> {
  if (access.authfile) return fn(access.authfile);
  const creds = process.env.KILN_REGISTRY_CREDS;
  if (!creds) return fn(undefined);
  const colon = creds.indexOf(":");
  if (colon <= 0)
    throw new KilnError("PUSH_CREDS", "KILN_REGISTRY_CREDS must be USER:PASSWORD (or a token)");
  const dir = await mkdtemp(join(scratchDir(), "kiln-auth-"));
  const drop = onCleanup(`registry credentials ${dir}`, () => removeTree(dir));
  try {
    const file = join(dir, "auth.json");
    await writeFile(file, authFileFor(host, creds), { mode: 0o600 });
    return await fn(file);
  } finally {
    await removeTree(dir);
    drop();
  }
}

/** The auth file skopeo reads ({"auths": {HOST: {auth: base64(USER:PASSWORD)}}}). */
export function authFileFor(host: string, creds: string): string {
  return `${JSON.stringify({ auths: { [host]: { auth: Buffer.from(creds).toString("base64") } } })}\n`;
}

/** skopeo's last word, without its logrus frame (time=… level=fatal msg="…"). */
export function skopeoReason(err: unknown): string {
  if (!(err instanceof ExecError)) return String(err);
  const line = err.stderr.trim().split("\n").pop() ?? "";
  const msg = /msg="((?:[^"\\]|\\.)*)"/.exec(line);
  return msg ? msg[1]!.replace(/\\"/g, '"') : line;
}

/**
 * Push the image tagged `tag` in the layout `dir` to `to`, digests kept as
 * they are (`--preserve-digests`: the registry stores kiln's uncompressed
 * layer byte for byte, so the digest kiln computed is the one pulled).
 * Returns the digest the registry holds.
 */
export async function pushLayout(
  dir: string,
  tag: string,
  to: RegistryRef,
  access: Access,
  onLine?: (line: string) => void,
): Promise<string> {
  const digestFile = join(dir, `.digest-${tag}`);
  await withCredentials(to.host, access, (auth) =>
    exec(
      "skopeo",
      [
        "copy",
        "--preserve-digests",
        `--dest-tls-verify=${access.tlsVerify}`,
        ...(auth ? ["--dest-authfile", auth] : []),
        "--digestfile",
        digestFile,
        `oci:${dir}:${tag}`,
        `docker://${refText(to)}`,
      ],
      onLine ? { onLine: (l) => onLine(l) } : {},
    ).catch((err) => {
      throw new KilnError("PUSH_REGISTRY", `cannot push to ${refText(to)}: ${skopeoReason(err)}`, {
        hint: access.tlsVerify
          ? "a plain-HTTP registry (on loopback) needs --insecure; a private one, credentials (see kiln push --help)"
          : "is the registry up, and may this user push to it?",
      });
    }),
  );
  return readFileSync(digestFile, "utf8").trim();
}

/** skopeo could not find that tag or digest (as opposed to any other failure). */
export class NotInRegistry extends Error {}

/** Copy `from` into a fresh OCI layout `dir` (tag `pulled`), layers as the registry has them. */
export async function pullToLayout(
  from: RegistryRef,
  dir: string,
  access: Access,
  onLine?: (line: string) => void,
): Promise<void> {
  await withCredentials(from.host, access, (auth) =>
    exec(
      "skopeo",
      [
        "copy",
        "--preserve-digests",
        "--dest-oci-accept-uncompressed-layers",
        `--src-tls-verify=${access.tlsVerify}`,
        ...(auth ? ["--src-authfile", auth] : []),
        // skopeo takes a tag or a digest, not both: the digest is the stronger.
        `docker://${refText(from.digest ? { ...from, tag: undefined } : from)}`,
        `oci:${dir}:pulled`,
      ],
      onLine ? { onLine: (l) => onLine(l) } : {},
    ).catch((err) => {
      const why = skopeoReason(err);
      if (/manifest unknown|not found|name unknown/i.test(why)) throw new NotInRegistry(why);
      throw new KilnError("PULL_REGISTRY", `cannot fetch ${refText(from)}: ${why}`, {
        hint: access.tlsVerify
          ? "a plain-HTTP registry (on loopback) needs --insecure"
          : "is the registry up, and the name and tag right?",
      });
    }),
  );
}
