import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rename, rmdir } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { KilnError } from "../util/errors.js";
import { ExecError, exec } from "../util/exec.js";
import { removeTree, treeBytes } from "../util/fsx.js";
import { storeDir } from "../util/paths.js";
import { ensureHosts } from "./pull.js";
import { addImage, findImage, type ImageRecord, type ImageRef, parseRef } from "./store.js";

/** An image kiln fetches rather than bootstraps: from a registry, or an OCI layout on disk. */
export type OciSource =
  | { transport: "docker"; ref: ImageRef; url: string }
  | { transport: "oci"; ref: ImageRef; dir: string; tag: string };

/**
 * `docker://HOST/REPO[:TAG]` (stored as HOST/REPO:TAG) or `oci:DIR[:TAG]`
 * (stored under DIR's base name, without `.oci`); anything else is not one.
 */
export function parseOciSource(text: string): OciSource | undefined {
  if (text.startsWith("docker://")) {
    const ref = parseRef(text.slice("docker://".length));
    return { transport: "docker", ref, url: `docker://${ref.name}:${ref.tag}` };
  }
  if (text.startsWith("oci:")) {
    const rest = text.slice("oci:".length);
    const slash = rest.lastIndexOf("/");
    const colon = rest.lastIndexOf(":");
    const [dir, tag] =
      colon > slash ? [rest.slice(0, colon), rest.slice(colon + 1)] : [rest, "latest"];
    const name = basename(resolve(dir))
      .replace(/\.oci$/, "")
      .toLowerCase();
    return { transport: "oci", ref: parseRef(`${name}:${tag}`), dir: resolve(dir), tag };
  }
  return undefined;
}

/** Docker's rule: a registry on this machine may speak plain HTTP. */
export function loopbackRegistry(name: string): boolean {
  const host = name.split("/")[0]!.replace(/:\d+$/, "");
  return host === "localhost" || /^127\./.test(host) || host === "[::1]";
}

/**
 * Fetch an OCI image into the store: skopeo copies a registry image into an
 * OCI layout, umoci unpacks the layout's layers into a root filesystem (as
 * root, owners and modes as in the image), and the image's command,
 * environment and working directory become `kiln run`'s defaults.
 */
export async function pullOci(
  src: OciSource,
  o: { force?: boolean; tlsVerify?: boolean; onLine?: (l: string) => void } = {},
): Promise<{ image: ImageRecord; fresh: boolean }> {
  const existing = findImage(src.ref);
  if (existing && !o.force) return { image: existing, fresh: false };
  await mkdir(storeDir("tmp"), { recursive: true });
  const scratch = await mkdtemp(join(storeDir("tmp"), "oci-"));
  try {
    let layout: string;
    if (src.transport === "docker") {
      layout = `${join(scratch, "layout")}:${src.ref.tag}`;
      const verify = o.tlsVerify ?? !loopbackRegistry(src.ref.name);
      // A multi-platform index: skopeo picks the host's entry unless told another architecture.
      const platform = src.ref.arch
        ? ["--override-arch", src.ref.arch, "--override-os", "linux"]
        : [];
      const args = ["copy", ...platform, `--src-tls-verify=${verify}`, src.url, `oci:${layout}`];
      await exec("skopeo", args, {
        ...(o.onLine ? { onLine: o.onLine } : {}),
      }).catch((err) => {
        throw new KilnError(
          "PULL_REGISTRY",
          `cannot pull ${src.url}: ${err instanceof ExecError ? lastLine(err.stderr) : String(err)}`,
          { hint: "is the registry up, and the name and tag right?" },
        );
      });
    } else {
      if (!existsSync(join(src.dir, "index.json")))
        throw new KilnError(
          "PULL_OCI_LAYOUT",
          `${src.dir} is not an OCI image layout (no index.json)`,
        );
      layout = `${src.dir}:${src.tag}`;
    }
    const bundle = join(scratch, "bundle");
    o.onLine?.("unpacking layers");
    await exec("umoci", ["unpack", "--image", layout, bundle]);
    const config = runtimeDefaults(join(bundle, "config.json"));
    const source = src.transport === "docker" ? src.url : `oci:${src.dir}:${src.tag}`;
    const image = await addImage(
      src.ref,
      source,
      async (rootfs) => {
        await rmdir(rootfs);
        await rename(join(bundle, "rootfs"), rootfs);
        await ensureHosts(rootfs);
        return treeBytes(rootfs);
      },
      config,
    );
    return { image, fresh: true };
  } finally {
    await removeTree(scratch);
  }
}

/** The runtime config umoci writes holds the image's Cmd/Entrypoint, Env and WorkingDir. */
function runtimeDefaults(file: string): ImageRecord["config"] {
  const c = JSON.parse(readFileSync(file, "utf8")) as {
    process?: { args?: string[]; env?: string[]; cwd?: string };
  };
  const p = c.process ?? {};
  return {
    ...(p.args?.length ? { cmd: p.args } : {}),
    ...(p.env?.length ? { env: p.env } : {}),
    ...(p.cwd && p.cwd !== "/" ? { workdir: p.cwd } : {}),
  };
}

/** skopeo's last word, without its logrus frame (time=… level=fatal msg="…"). */
function lastLine(text: string): string {
  const line = text.trim().split("\n").pop() ?? "";
  const msg = /msg="((?:[^"\\]|\\.)*)"/.exec(line);
  return msg ? msg[1]!.replace(/\\"/g, '"') : line;
}
