import { existsSync, statSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { type Manifest, readManifest } from "../artifact/manifest.js";
import { acquire } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { ExecError, exec } from "../util/exec.js";
import { archiveTree } from "../util/tar.js";

/** What an A/B root filesystem says about itself (written by the build's updater step). */
export interface Release {
  name: string;
  version: string;
  compatible: string;
}

export function parseRelease(text: string): Release {
  const get = (k: string) => new RegExp(`^${k}=(.*)$`, "m").exec(text)?.[1] ?? "";
  return { name: get("NAME"), version: get("VERSION"), compatible: get("COMPATIBLE") };
}

/** The root filesystem (directory or tar) of a build output directory. */
export async function rootfsOfBuild(dir: string): Promise<{ path: string; manifest: Manifest }> {
  const manifest = await readManifest(dir, {
    hint: "give `kiln bundle` a spec or the output directory of `kiln build`",
  });
  for (const format of ["directory", "tar"]) {
    const a = manifest.artifacts.find((x) => x.format === format);
    if (a && existsSync(join(dir, a.path))) return { path: join(dir, a.path), manifest };
  }
  throw new KilnError("BUNDLE_NO_ROOTFS", `${dir} has no directory or tar output to bundle`, {
    hint: "add `tar` to outputs, or give `kiln bundle` the spec",
  });
}

async function readRelease(rootfs: string): Promise<Release> {
  let text: string;
  try {
    text = statSync(rootfs).isDirectory()
      ? await readFile(join(rootfs, "etc/kiln/release"), "utf8")
      : (await exec("tar", ["-xOf", rootfs, "./etc/kiln/release"])).stdout;
  } catch {
    throw new KilnError("BUNDLE_NOT_AB", `${rootfs} is not an A/B system (no /etc/kiln/release)`, {
      hint: "bundles update machines built with disk.layout: ab",
    });
  }
  return parseRelease(text);
}

/**
 * What a bundle version may be: the device compares it with its running
 * version (dpkg --compare-versions), and it is written into a keyfile and a
 * release file, so nothing that could break a line or a comparison.
 */
export const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9.+~:_-]{0,63}$/;

/**
 * A bundle made with another version than its root filesystem's: the slot
 * it installs must say the bundle's version, since that is what the device
 * compares the next bundle against (no downgrades).
 */
async function setReleaseVersion(
  tar: string,
  tmp: string,
  release: Release,
  version: string,
): Promise<void> {
  const dir = join(tmp, "release");
  await mkdir(join(dir, "etc/kiln"), { recursive: true });
  await writeFile(
    join(dir, "etc/kiln/release"),
    `NAME=${release.name}\nVERSION=${version}\nCOMPATIBLE=${release.compatible}\n`,
  );
  await exec("tar", ["--delete", "-f", tar, "./etc/kiln/release"]);
  await exec("tar", [
    "--numeric-owner",
    "--owner=0",
    "--group=0",
    "--mode=0644",
    "-C",
    dir,
    "-rf",
    tar,
    "./etc/kiln/release",
  ]);
}

export interface BundleOptions {
  rootfs: string;
  out: string;
  key: string;
  cert: string;
  /** Checked at creation time if given: the signature must chain to this CA. */
  keyring?: string;
  version?: string;
  compatible?: string;
}

/**
 * A RAUC bundle in the verity format: the root filesystem as a tar image in
 * a squashfs whose every block is covered by a dm-verity hash tree, and a
 * CMS signature over the manifest (compatible, version, the image's sha256
 * and the verity root hash). Written beside `out` and renamed into place.
 */
export async function makeBundle(o: BundleOptions): Promise<BundleInfo> {
  for (const [what, f] of [
    ["key", o.key],
    ["cert", o.cert],
  ] as const)
    if (!existsSync(f) && !f.startsWith("pkcs11:"))
      throw new KilnError("BUNDLE_KEY", `--${what} ${f} does not exist`, {
        hint: "make a development key with `kiln keys init`",
      });
  const release = await readRelease(o.rootfs);
  const version = o.version ?? release.version;
  if (!VERSION_RE.test(version))
    throw new KilnError("BUNDLE_VERSION", `bundle version "${version}" is not a version`, {
      hint: "use letters, digits and . + ~ : _ - starting with a letter or digit (compared as Debian versions on the device)",
    });
  const out = resolve(o.out);
  const tmp = await mkdtemp(join(dirname(out), `.${basename(out)}.kiln-`));
  const { dispose } = await acquire(
    `bundle work directory ${tmp}`,
    () => rm(tmp, { recursive: true, force: true }),
    async () => {
      const content = join(tmp, "content");
      await mkdir(content);
      const tar = join(content, "rootfs.tar");
      if (statSync(o.rootfs).isDirectory()) await archiveTree(o.rootfs, tar, { sort: true });
      // Plain tar inside: the bundle's squashfs compresses it, and the device needs no zstd.
      else await exec("sh", ["-c", 'zstd -dcf "$1" >"$2"', "sh", o.rootfs, tar]);
      if (version !== release.version) await setReleaseVersion(tar, tmp, release, version);
      await writeFile(
        join(content, "manifest.raucm"),
        [
          "[update]",
          `compatible=${o.compatible ?? release.compatible}`,
          `version=${version}`,
          `description=${release.name}`,
          `build=${new Date().toISOString()}`,
          "",
          "[bundle]",
          "format=verity",
          "",
          "[image.rootfs]",
          "filename=rootfs.tar",
          "",
        ].join("\n"),
      );
      const part = join(tmp, "bundle.raucb");
      await exec("rauc", [
        "bundle",
        `--cert=${o.cert}`,
        `--key=${o.key}`,
        ...(o.keyring ? [`--signing-keyring=${o.keyring}`] : []),
        "--mksquashfs-args=-comp zstd",
        content,
        part,
      ]);
      await rename(part, out);
    },
  );
  await dispose();
  return bundleInfo(out, o.keyring);
}

export interface BundleInfo {
  path: string;
  bytes: number;
  compatible: string;
  version: string;
  description?: string;
  build?: string;
  format: string;
  images: { slotClass: string; filename: string; sha256: string; bytes: number }[];
  /** Whether the signature was checked against a keyring (false: not checked). */
  verified: boolean;
}

/** What a bundle's manifest says; with a keyring the signature is verified first. */
export async function bundleInfo(path: string, keyring?: string): Promise<BundleInfo> {
  const args = ["info", "--output-format=json"];
  args.push(keyring ? `--keyring=${keyring}` : "--no-verify");
  const r = await exec("rauc", [...args, path]).catch((err: unknown) => {
    const why =
      err instanceof ExecError
        ? /(signature verification failed.*|Invalid bundle.*|.*not a bundle.*)/i.exec(
            err.stderr,
          )?.[1]
        : undefined;
    if (why)
      throw new KilnError("BUNDLE_INVALID", `${path}: ${why.trim()}`, {
        ...(keyring ? { hint: `is it signed by a key that chains to ${keyring}?` } : {}),
      });
    throw err;
  });
  const j = JSON.parse(r.stdout) as {
    compatible: string;
    version: string;
    description?: string;
    build?: string;
    hooks?: unknown;
    images: Record<string, { filename: string; checksum: string; size: number }>[];
  };
  const format = /Bundle Format:\s*(\S+)/.exec(r.stderr)?.[1] ?? "verity";
  return {
    path,
    bytes: (await stat(path)).size,
    compatible: j.compatible,
    version: j.version,
    ...(j.description ? { description: j.description } : {}),
    ...(j.build ? { build: j.build } : {}),
    format,
    images: j.images.flatMap((m) =>
      Object.entries(m).map(([slotClass, i]) => ({
        slotClass,
        filename: i.filename,
        sha256: i.checksum,
        bytes: i.size,
      })),
    ),
    verified: !!keyring,
  };
}
