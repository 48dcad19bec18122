import {
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  type Stats,
  statSync,
} from "node:fs";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { basename, dirname, join, relative } from "node:path";
import { loadSpec } from "../../config/load.js";
import { cachedRootfs } from "../../distro/rootfs-cache.js";
import { planBuild } from "../../plan/plan.js";
import { KilnError } from "../../util/errors.js";
import { exec } from "../../util/exec.js";
import { removeTree } from "../../util/fsx.js";
import { sha256File } from "../../util/hash.js";
import { archiveTree, extractTree } from "../../util/tar.js";
import type { BuildContext } from "../context.js";
import { agentStep } from "./agent.js";
import { filesStep } from "./configure.js";

/**
 * Add-ons a machine attaches to its base image at run time: portable
 * services (a service with its own root) and system extensions (files over
 * /usr). Both are squashfs images named NAME_VERSION.raw, as portablectl
 * and systemd-sysext expect versioned images to be named.
 */

const UNIT_DIRS = ["etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"];
const UNIT_KINDS = /\.(service|socket|timer|path|target)$/;

/** A unit file named with the image's prefix, as portablectl picks them: NAME.service, NAME-x.socket, NAME@.service. */
const prefixed = (name: string, f: string) =>
  UNIT_KINDS.test(f) && [".", "-", "@"].some((c) => f.startsWith(`${name}${c}`));

export function prefixedUnits(root: string, name: string): string[] {
  const out = new Set<string>();
  for (const d of UNIT_DIRS) {
    const dir = join(root, d);
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir)) if (prefixed(name, f)) out.add(f);
  }
  return [...out].sort();
}

async function squashfs(root: string, out: string): Promise<void> {
  await exec("mksquashfs", [root, out, "-noappend", "-comp", "zstd", "-quiet", "-no-progress"]);
}

/**
 * `outputs: [portable]`: the whole root filesystem, with the empty files the
 * portable profiles bind-mount over (a squashfs cannot grow mount points).
 */
export async function portableStep(ctx: BuildContext): Promise<string> {
  const { spec, root } = ctx;
  const units = prefixedUnits(root, spec.name);
  if (!units.length)
    throw new KilnError(
      "BUILD_PORTABLE_UNITS",
      `a portable service image needs a unit named ${spec.name}.service (or ${spec.name}-*.service, .socket, .timer)`,
      { hint: `add it under files:, e.g. path: /usr/lib/systemd/system/${spec.name}.service` },
    );
  for (const f of ["etc/machine-id", "etc/resolv.conf", "run/dbus/system_bus_socket"]) {
    const p = join(root, f);
    if (existsSync(p) || lstatSafe(p)) continue;
    await mkdir(dirname(p), { recursive: true });
    await writeFile(p, "");
  }
  const out = join(ctx.stage, `${spec.name}_${spec.version}.raw`);
  await squashfs(root, out);
  return out;
}

/**
 * `outputs: [sysext]`: /usr and /opt only, and of those only what the spec
 * adds to the base it extends (files that are new or differ from the base's
 * root filesystem), plus the extension-release file that ties it to the base
 * OS (ID and VERSION_ID).
 */
export async function sysextStep(ctx: BuildContext): Promise<string> {
  const { spec, root } = ctx;
  const scratch = await mkdtemp(join(ctx.work, "sysext-"));
  try {
    let base: string | undefined;
    const baseFile = ctx.loaded.files[1];
    if (baseFile) {
      base = join(scratch, "base");
      await mkdir(base);
      ctx.detail("base root filesystem");
      const loaded = loadSpec(baseFile);
      const plan = planBuild(loaded.spec, loaded.canonical);
      const { tar } = await cachedRootfs({
        recipe: plan.recipe,
        distro: loaded.spec.distribution.id,
        key: plan.steps[0]!.key,
        refresh: false,
        scratch: join(scratch, "tmp"),
        onLine: (l) => ctx.detail(l),
      });
      await extractTree(tar, base);
      // What kiln itself puts into the base beside its packages, so the extension does not carry it again.
      await filesStep({ ...ctx, root: base, spec: loaded.spec });
      if (loaded.spec.agent) await agentStep(base, loaded.spec.agent);
    }
    const tree = join(scratch, "tree");
    await mkdir(tree);
    const paths = addedPaths(root, base, ["usr", "opt"]);
    if (paths.length) {
      const list = join(scratch, "list");
      await writeFile(list, `${paths.join("\n")}\n`);
      await archiveTree(root, join(scratch, "added.tar"), { only: list });
      await extractTree(join(scratch, "added.tar"), tree);
    }
    const os = osRelease(root);
    const rel = join(tree, "usr/lib/extension-release.d", `extension-release.${spec.name}`);
    await mkdir(dirname(rel), { recursive: true });
    await writeFile(
      rel,
      [
        `ID=${os.ID ?? spec.distribution.id}`,
        `VERSION_ID=${os.VERSION_ID ?? ""}`,
        `IMAGE_ID=${spec.name}`,
        `IMAGE_VERSION=${spec.version}`,
        // systemd-sysext merges it only on a machine of this architecture (systemd's names).
        `ARCHITECTURE=${spec.architecture === "amd64" ? "x86-64" : spec.architecture}`,
        "",
      ].join("\n"),
    );
    const out = join(ctx.stage, `${spec.name}_${spec.version}.raw`);
    await squashfs(tree, out);
    return out;
  } finally {
    await removeTree(scratch);
  }
}

/** The os-release of a root filesystem as key/value pairs. */
export function osRelease(root: string): Record<string, string> {
  for (const f of ["etc/os-release", "usr/lib/os-release"]) {
    try {
      return parseEnvFile(readFileSync(join(root, f), "utf8"));
    } catch {}
  }
  return {};
}

export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!.replace(/^(["'])(.*)\1$/, "$2");
  }
  return out;
}

function lstatSafe(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}

/**
 * Same file for our purpose: same type, mode and owner, and same link
 * target or same size and content (compared byte for byte up to 4 MiB,
 * by mtime beyond: packages set it, and big files are packaged ones).
 */
function same(a: Stats, b: Stats, pa: string, pb: string): boolean {
  if (a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid) return false;
  if (a.isSymbolicLink()) return readlinkSync(pa) === readlinkSync(pb);
  if (!a.isFile()) return true;
  if (a.size !== b.size) return false;
  if (a.size > 4 * 2 ** 20) return Math.floor(a.mtimeMs / 1000) === Math.floor(b.mtimeMs / 1000);
  return readFileSync(pa).equals(readFileSync(pb));
}

/**
 * Paths under `tops` (relative to `root`) that `base` lacks or has
 * otherwise, with every parent directory of such a path, parents first.
 * Without a base, everything under `tops`.
 */
export function addedPaths(root: string, base: string | undefined, tops: string[]): string[] {
  const picked = new Set<string>();
  const pick = (rel: string) => {
    const parts = rel.split("/");
    for (let i = 1; i <= parts.length; i++) picked.add(parts.slice(0, i).join("/"));
  };
  const walk = (rel: string) => {
    const p = join(root, rel);
    const st = lstatSafe(p);
    if (!st) return;
    const b = base ? lstatSafe(join(base, rel)) : undefined;
    if (!b || !same(st, b, p, join(base!, rel))) {
      if (!st.isDirectory()) return pick(rel);
      // A new or changed directory is kept even if empty.
      pick(rel);
    }
    if (st.isDirectory()) for (const f of readdirSync(p).sort()) walk(join(rel, f));
  };
  for (const t of tops) walk(t);
  return [...picked].sort((x, y) => x.localeCompare(y)).map((p) => relative(".", p) || p);
}

/** What a portable or sysext image is: read from inside it with unsquashfs, no mounting. */
export async function inspectAddon(file: string): Promise<{
  kind: "portable" | "sysext";
  name: string;
  version: string;
  distribution?: string;
  units: string[];
  bytes: number;
  sha256: string;
}> {
  const m = /^([A-Za-z0-9.-]+)_([A-Za-z0-9.-]+)\.raw$/.exec(basename(file));
  if (!m)
    throw new KilnError(
      "INSPECT_ADDON",
      `${file}: not named NAME_VERSION.raw as kiln's add-ons are`,
    );
  const [, name, version] = m as unknown as [string, string, string];
  const listing = (await exec("unsquashfs", ["-l", "-d", "", file])).stdout.split("\n");
  const cat = async (p: string) => (await exec("unsquashfs", ["-cat", file, p])).stdout;
  const rel = `usr/lib/extension-release.d/extension-release.${name}`;
  const kind = listing.includes(`/${rel}`) ? "sysext" : "portable";
  const info = parseEnvFile(
    kind === "sysext" ? await cat(rel) : await cat("usr/lib/os-release").catch(() => ""),
  );
  const units = listing
    .filter((l) => UNIT_DIRS.some((d) => l.startsWith(`/${d}/`)))
    .map((l) => l.slice(l.lastIndexOf("/") + 1))
    .filter((f) => prefixed(name, f));
  return {
    kind,
    name,
    version,
    ...(info.ID ? { distribution: `${info.ID} ${info.VERSION_ID ?? ""}`.trim() } : {}),
    units,
    bytes: statSync(file).size,
    sha256: await sha256File(file),
  };
}
