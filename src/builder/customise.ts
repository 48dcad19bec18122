import { existsSync, lstatSync, readFileSync } from "node:fs";
import { copyFile, mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { diskPath, requireDisk } from "../cloud/store.js";
import { parseSize, trimmed } from "../config/schema.js";
import { listPackages } from "../distro/packages.js";
import { loopPartition, partitionNumber, partitions, rootPartition } from "../image/partitions.js";
import { noCloudSeed } from "../seed/nocloud.js";
import { seedAccounts } from "../seed/users.js";
import { acquire } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { detachLoop, mib, unmount } from "../util/fsx.js";
import { cacheDir } from "../util/paths.js";
import { inRoot } from "./chroot.js";
import type { BuildContext } from "./context.js";
import { filesStep, systemctl } from "./steps/configure.js";
import { usersStep } from "./steps/users.js";

/**
 * Customising an imported disk (`base: image:NAME`): the build works on a
 * sparse copy in its work directory; the stored import is only ever read.
 */
const workDisk = (ctx: BuildContext) => join(ctx.work, "disk.raw");

export const baseName = (base: string) => base.replace(/^image:/, "");

/** Copy the imported disk; with disk.size, grow the disk and its root partition. */
export async function baseStep(ctx: BuildContext): Promise<string> {
  const name = baseName(ctx.spec.base!);
  const record = requireDisk(name);
  const raw = workDisk(ctx);
  await exec("cp", ["--sparse=always", diskPath(name), raw]);
  ctx.facts.base = record;
  const size = ctx.spec.disk.size ? parseSize(ctx.spec.disk.size) : undefined;
  if (size === undefined || size === record.virtualSize) return `${name}`;
  if (size < record.virtualSize)
    throw new KilnError(
      "CUSTOMISE_SHRINK",
      `disk.size ${ctx.spec.disk.size} is smaller than ${name} (${mib(record.virtualSize)}); disks only grow`,
    );
  const root = await rootPartition(raw);
  const after = (await partitions(raw)).filter((p) => p.start > root.start);
  if (after.length)
    throw new KilnError(
      "CUSTOMISE_GROW",
      `the root partition of ${name} is not the last one on the disk (${after.map((p) => p.node).join(", ")} follow it), so it cannot grow`,
      { hint: "leave disk.size out to keep the imported size" },
    );
  await exec("truncate", ["-s", String(size), raw]);
  // The GPT backup header must move to the new end before the partition can use the space.
  await exec("sfdisk", ["--relocate", "gpt-bak-std", raw]);
  await exec(
    "sfdisk",
    ["--no-reread", "--no-tell-kernel", "-N", String(partitionNumber(root)), raw],
    {
      input: ", +\n",
    },
  );
  ctx.facts.grown = true;
  return `${name}, grown to ${ctx.spec.disk.size}`;
}

/** What /etc/os-release of the image says, for the apt download cache it shares with builds. */
function osRelease(root: string): { id: string; codename: string } {
  const f = join(root, "etc/os-release");
  const text = existsSync(f) ? readFileSync(f, "utf8") : "";
  const get = (k: string) => new RegExp(`^${k}="?([^"\\n]*)"?`, "m").exec(text)?.[1] ?? "";
  return { id: get("ID") || "unknown", codename: get("VERSION_CODENAME") || "unknown" };
}

/**
 * Mount the copy's root filesystem and apply the spec: apt packages (with
 * the image's own apt and sources), users, files, services, a baked seed.
 * Every mount, the loop device and the resolv.conf swap are undone on
 * success, error and Ctrl-C alike.
 */
export async function customiseStep(ctx: BuildContext): Promise<string> {
  const { spec, root } = ctx;
  const raw = workDisk(ctx);
  const part = await rootPartition(raw);
  const mounts: string[] = [];
  let loop: string | undefined;
  const restore: (() => Promise<void>)[] = [];
  const undo = async () => {
    for (const r of restore.splice(0).reverse()) await r().catch(() => {});
    for (const m of mounts.splice(0).reverse()) await unmount(m);
    if (loop) await detachLoop(loop);
    loop = undefined;
  };
  const { dispose } = await acquire(`customised disk ${raw}`, undo, async () => {
    loop = await loopPartition(raw, part);
    if (ctx.facts.grown) {
      const fs = (await exec("blkid", ["-o", "value", "-s", "TYPE", loop])).stdout.trim();
      if (fs !== "ext4" && fs !== "ext3" && fs !== "ext2")
        throw new KilnError(
          "CUSTOMISE_GROW",
          `cannot grow a ${fs || "unknown"} root filesystem (only ext2/3/4)`,
        );
      await exec("e2fsck", ["-f", "-y", loop], { okCodes: [0, 1] });
      await exec("resize2fs", [loop]);
    }
    await mkdir(root, { recursive: true });
    await exec("mount", [loop, root]);
    mounts.push(root);
  });
  try {
    const notes: string[] = [];
    if (spec.packages.length) {
      await aptInstall(ctx, mounts, restore);
      notes.push(`${spec.packages.length} packages`);
    }
    await usersStep(ctx);
    await filesStep(ctx);
    await systemctl(root, "enable", spec.services.enable);
    await systemctl(root, "disable", spec.services.disable);
    await systemctl(root, "mask", spec.services.mask);
    notes.push(`${spec.users.length} users, ${spec.files.length} files`);
    if (spec.seed?.bake) {
      const acc = seedAccounts(spec);
      ctx.credentials.push(...acc.credentials);
      const dir = join(root, "var/lib/cloud/seed/nocloud");
      await mkdir(dir, { recursive: true });
      for (const [name, text] of Object.entries(noCloudSeed(spec, acc)))
        await writeFile(join(dir, name), text, { mode: 0o600 });
      notes.push("NoCloud seed baked in");
    }
    ctx.facts.packages = await listPackages(root);
    const df = (await exec("df", ["--output=used", "-B1", root])).stdout.trim().split("\n").pop();
    ctx.facts.installedBytes = Number(df);
    return notes.join(", ");
  } finally {
    await dispose();
  }
}

/**
 * apt inside the image. The image's /etc/resolv.conf (often a link into
 * /run that is empty offline) is swapped for the host's while apt runs,
 * daemons are kept from starting, and downloads go to the apt cache kiln's
 * builds share.
 */
async function aptInstall(
  ctx: BuildContext,
  mounts: string[],
  restore: (() => Promise<void>)[],
): Promise<void> {
  const { root, spec } = ctx;
  for (const [fs, dir, opts] of [
    ["proc", "proc", []],
    ["sysfs", "sys", []],
    ["/dev", "dev", ["--bind"]],
    ["/dev/pts", "dev/pts", ["--bind"]],
  ] as const) {
    await mkdir(join(root, dir), { recursive: true });
    await exec("mount", [...opts, ...(opts.length ? [] : ["-t", fs]), fs, join(root, dir)]);
    mounts.push(join(root, dir));
  }
  const os = osRelease(root);
  const cache = cacheDir("apt", `${os.id}-${os.codename}-amd64`);
  await mkdir(cache, { recursive: true });
  await mkdir(join(root, "var/cache/apt/archives"), { recursive: true });
  await exec("mount", ["--bind", cache, join(root, "var/cache/apt/archives")]);
  mounts.push(join(root, "var/cache/apt/archives"));

  const resolv = join(root, "etc/resolv.conf");
  const saved = join(root, "etc/resolv.conf.kiln-saved");
  const had = existsSync(resolv) || isLink(resolv);
  if (had) await rename(resolv, saved);
  await copyFile("/etc/resolv.conf", resolv);
  restore.push(async () => {
    await rm(resolv, { force: true });
    if (had) await rename(saved, resolv);
  });
  const policy = join(root, "usr/sbin/policy-rc.d");
  await writeFile(
    policy,
    "#!/bin/sh\n# kiln: no daemons start while the image is customised\nexit 101\n",
    {
      mode: 0o755,
    },
  );
  restore.push(() => rm(policy, { force: true }));

  const env = { DEBIAN_FRONTEND: "noninteractive" };
  ctx.detail("apt-get update");
  await inRoot(root, "apt-get", ["-q", "update"], { env });
  ctx.detail(`apt-get install ${spec.packages.join(" ")}`);
  await inRoot(
    root,
    "apt-get",
    [
      "-q",
      "-y",
      "-o",
      "Dpkg::Options::=--force-confold",
      "install",
      ...(trimmed(spec) ? ["--no-install-recommends"] : []),
      ...spec.packages,
    ],
    { env, hint: "is every name in packages: a package of the imported system's release?" },
  );
  if (trimmed(spec))
    await inRoot(root, "sh", [
      "-c",
      "rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/apt/lists/partial",
    ]);
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** The customised copy becomes the disk output. */
export async function customisedDiskStep(ctx: BuildContext): Promise<string> {
  const out = join(ctx.stage, `${ctx.spec.name}.raw`);
  await rename(workDisk(ctx), out);
  ctx.facts.disk = { base: ctx.spec.base, from: ctx.facts.base?.source };
  return out;
}
