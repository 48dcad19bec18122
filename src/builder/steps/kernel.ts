import { existsSync, readdirSync } from "node:fs";
import { mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CLOUDS, cloudsOf } from "../../config/clouds.js";
import { APT_OFFERS } from "../../distro/mmdebstrap.js";
import { listPackages } from "../../distro/packages.js";
import { KilnError } from "../../util/errors.js";
import { cacheKey } from "../../util/hash.js";
import { inRoot } from "../chroot.js";
import type { BuildContext } from "../context.js";
import { StepCache } from "../step-cache.js";
import { initrdModules, newestKernel, pruneModules } from "./modules.js";

/**
 * Kernel version, initrd and the stable /vmlinuz and /initrd.img links GRUB
 * boots through (so an updated slot may carry another kernel version).
 */
export async function kernelStep(ctx: BuildContext): Promise<string | undefined> {
  const { root, spec } = ctx;
  const version = newestKernel(readdirSync(join(root, "boot")));
  if (!version) {
    throw new KilnError("BUILD_NO_KERNEL", "the image has no kernel in /boot", {
      hint: "set kernel.package to a linux-image package of the distribution",
    });
  }
  ctx.facts.kernelVersion = version;
  const pkg = ctx.plan.recipe.kernel;
  if (pkg && existsSync(join(root, APT_OFFERS.slice(1)))) {
    // From outside: dpkg-query in the chroot took 0.3 s of a 6 s rebuild.
    ctx.facts.kernelPackage = {
      name: pkg,
      version: (await listPackages(root)).find((p) => p.name === pkg)?.version ?? "",
      offered: parseMadison(await readFile(join(root, APT_OFFERS.slice(1)), "utf8"), pkg),
    };
  }

  let note: string | undefined;
  // Before the initrd, which is made from (and must match) the modules that stay.
  await pruneModules(ctx, version);
  const pruned = ctx.facts.modules !== undefined;
  if (spec.kernel.initrd === "tiny") {
    const conf = join(root, "etc/tiny-initramfs");
    await mkdir(conf, { recursive: true });
    // Automatic detection reads the build host's mounts, which say nothing about the target machine.
    const text = `# Written by kiln from kernel.modules\nAUTO_MODULES=no\nINCLUDE_MODULES="${initrdModules(spec).join(",")}"\nMICROCODE=no\n`;
    await writeFile(join(conf, "tiny-initramfs.conf"), text);
    const initrd = `/boot/initrd.img-${version}`;
    const key = tinyInitrdKey(ctx, version, text);
    if (key && (await INITRDS.restore(key, join(root, initrd), ctx.epoch))) note = "initrd cached";
    else {
      await inRoot(root, "mktirfs", ["-o", initrd, version]);
      if (ctx.epoch !== undefined) await reproducibleTinyInitrd(root, initrd);
      if (key) await INITRDS.save(key, join(root, initrd));
    }
  } else if (!existsSync(join(root, `boot/initrd.img-${version}`))) {
    await inRoot(root, "update-initramfs", ["-c", "-k", version]);
  } else if (ctx.facts.mirrorUuid || pruned) {
    // The initrd made at bootstrap has mdadm but not the array kiln wrote to mdadm.conf
    // since, and modules the root no longer has.
    await inRoot(root, "update-initramfs", ["-u", "-k", version]);
  }
  await checkCloudDrivers(ctx, version);
  for (const [link, target] of [
    ["vmlinuz", `boot/vmlinuz-${version}`],
    ["initrd.img", `boot/initrd.img-${version}`],
  ] as const) {
    await rm(join(root, link), { force: true });
    await symlink(target, join(root, link));
  }
  return note;
}

const INITRDS = new StepCache("initrd");

/**
 * What a tiny initrd is made from: the root the build started from (its
 * kernel, modules and mktirfs), the configuration and the epoch. Undefined,
 * so made afresh, for a root of unknown origin (a customised import) or one
 * whose spec writes into what mktirfs reads.
 */
function tinyInitrdKey(ctx: BuildContext, version: string, conf: string): string | undefined {
  const reads =
    /^\/(usr\/)?(lib\/modules|share\/tiny-initramfs|lib\/tiny-initramfs)\/|^\/etc\/tiny-initramfs\//;
  if (!ctx.rootId || ctx.spec.files.some((f) => reads.test(f.path))) return undefined;
  // The modules kept (kernel.keep_modules) decide the modules.dep mktirfs resolves against.
  const kept = ctx.facts.modules?.kept ?? "all";
  return cacheKey("tiny-initrd-2", ctx.rootId, version, conf, kept, ctx.epoch ?? "now");
}

/**
 * mktirfs archives its staging directory as the clock left it (times, inode
 * numbers); initramfs-tools honours SOURCE_DATE_EPOCH itself. Repack the
 * gzip'd newc archive sorted, with every time the epoch and no inode numbers.
 */
async function reproducibleTinyInitrd(root: string, initrd: string): Promise<void> {
  await inRoot(root, "sh", [
    "-ec",
    `img=$1; [ "$(od -An -tx1 -N2 "$img" | tr -d ' ')" = 1f8b ] || { echo "$img is not one gzip archive" >&2; exit 1; }
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT; cd "$t"
gzip -dc "$img" | cpio -id --quiet
find . -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
find . ! -name . -print0 | LC_ALL=C sort -z | cpio --null -o --quiet -R 0:0 -H newc --reproducible | gzip -9 -n > "$img.new"
touch -d "@$SOURCE_DATE_EPOCH" "$img.new"; mv "$img.new" "$img"`,
    "sh",
    initrd,
  ]);
}

/** `apt-cache madison PKG` lines: each version a suite offered, newest first. */
export function parseMadison(text: string, pkg: string): { version: string; suite: string }[] {
  const out: { version: string; suite: string }[] = [];
  for (const line of text.split("\n")) {
    const [name, version, source] = line.split("|").map((f) => f.trim());
    if (name !== pkg || !version || !source) continue;
    // "http://deb.debian.org/debian-security bookworm-security/main amd64 Packages"
    const suite = source.split(/\s+/)[1]?.split("/")[0];
    if (suite) out.push({ version, suite });
  }
  return out;
}

/** An image for a cloud without that cloud's disk or network driver would not come up there. */
async function checkCloudDrivers(ctx: BuildContext, version: string): Promise<void> {
  // Clouds share drivers (nvme, virtio_scsi): each is looked up once.
  const present = new Map<string, boolean>();
  for (const cloud of cloudsOf(ctx.spec)) {
    const missing: string[] = [];
    for (const mod of CLOUDS[cloud].drivers) {
      if (!present.has(mod)) {
        const r = await inRoot(ctx.root, "modinfo", ["-k", version, "-n", mod], {
          okCodes: [0, 1],
        });
        present.set(mod, r.code === 0);
      }
      if (!present.get(mod)) missing.push(mod);
    }
    if (missing.length)
      throw new KilnError(
        "BUILD_CLOUD_DRIVER",
        `kernel ${version} lacks ${missing.join(", ")}, which outputs: [${cloud}] needs (${CLOUDS[cloud].title})`,
        {
          hint: "use the distribution's cloud kernel (leave kernel.package out), or one built with them",
        },
      );
  }
}
