import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join, relative } from "node:path";
import { CLOUDS, cloudsOf } from "../../config/clouds.js";
import { keepModulesPolicy, type Spec } from "../../config/schema.js";
import { kernelIndexOf } from "../../distro/rootfs-cache.js";
import { KilnError } from "../../util/errors.js";
import { extractTree } from "../../util/tar.js";
import { listTar, type TarMember } from "../../util/tar-format.js";
import { inRoot } from "../chroot.js";
import type { BuildContext, DeferredModules } from "../context.js";
import { ISO_MODULES } from "./iso.js";
import { NETBOOT_MODULES, parseModulesDep } from "./netboot.js";

/**
 * The hardware a kiln image is made to run on: QEMU/KVM (and the clouds
 * built on it), Hyper-V/Azure, Xen/EC2, VMware, and the NICs public clouds
 * pass through (ENA, gVNIC, Mellanox, Intel SR-IOV). A name this kernel does
 * not have, or has built in, is skipped (Debian's cloud kernel has no AHCI,
 * its NVMe and ext4 are built in).
 */
export const HARDWARE_MODULES = [
  "virtio_pci",
  "virtio_mmio",
  "virtio_blk",
  "virtio_scsi",
  "virtio_net",
  "virtio_console",
  "virtio_rng",
  "virtio_balloon",
  "qemu_fw_cfg",
  "nvme",
  "ahci",
  "ata_piix",
  "sd_mod",
  // A cloud-init seed or an installer arrives as a CD.
  "sr_mod",
  "ena",
  "gve",
  "mlx4_en",
  "mlx5_core",
  "e1000",
  "e1000e",
  "igb",
  "igbvf",
  "ixgbe",
  "ixgbevf",
  "hv_vmbus",
  "hv_netvsc",
  "hv_storvsc",
  "hv_utils",
  "hv_balloon",
  "vmxnet3",
  "vmw_pvscsi",
  "xen_blkfront",
  "xen_netfront",
  // The ACPI power button: a host's shutdown request reaches systemd.
  "button",
  "evdev",
];

/**
 * What the running system mounts or systemd loads itself: the root and ESP
 * (FAT needs its code pages), a seed ISO, images through loop (squashfs,
 * overlay), EFI variables, systemd's automounts, and ip_tables, which is
 * loaded at every boot today (something asks for it; it is small).
 */
export const SYSTEM_MODULES = [
  "ext4",
  "vfat",
  "nls_cp437",
  "nls_ascii",
  "nls_utf8",
  "nls_iso8859_1",
  "isofs",
  "squashfs",
  "overlay",
  "loop",
  "efivarfs",
  "autofs4",
  "ip_tables",
];

/** The spec's initrd modules, and what its clouds' disks need to be found. */
export function initrdModules(spec: Spec): string[] {
  return [...new Set([...spec.kernel.modules, ...cloudsOf(spec).flatMap((c) => CLOUDS[c].boot)])];
}

/** The module names the spec needs (before the dependency closure). */
export function neededModules(spec: Spec): string[] {
  const names = [...HARDWARE_MODULES, ...SYSTEM_MODULES, ...initrdModules(spec)];
  for (const c of cloudsOf(spec)) names.push(...CLOUDS[c].drivers);
  // RAUC's verity bundles are squashfs images mounted through loop and dm-verity.
  if (spec.disk.layout === "ab") names.push("dm_mod", "dm_verity");
  if (spec.disk.layout === "raid1") names.push("md_mod", "raid1");
  // Portable services (the agent's add-ons) are images attached through loop and dm.
  if (spec.agent) names.push("dm_mod", "dm_verity");
  // The netboot and ISO initrds are made later from this same module tree.
  if (spec.outputs.includes("netboot")) names.push(...NETBOOT_MODULES);
  if (spec.outputs.includes("iso")) names.push(...ISO_MODULES);
  names.push(...spec.kernel.extra_modules);
  return [...new Set(names.map(modName))];
}

/** Module names compare with `-` and `_` alike (md-mod.ko is md_mod). */
export function modName(name: string): string {
  return name.replace(/-/g, "_");
}

/** modules.softdep: "softdep MOD pre: A B post: C" → MOD → [A, B, C] (names or aliases). */
export function parseSoftdeps(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const [word, mod, ...rest] = line.trim().split(/\s+/);
    if (word !== "softdep" || !mod) continue;
    const deps = rest.filter((w) => w !== "pre:" && w !== "post:");
    out.set(modName(mod), [...(out.get(modName(mod)) ?? []), ...deps]);
  }
  return out;
}

/** modules.alias lines without wildcards: alias → module (softdeps name e.g. crypto-crc32c). */
export function parseAliases(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const [word, alias, mod] = line.trim().split(/\s+/);
    if (word === "alias" && alias && mod && !/[*?[]/.test(alias)) out.set(alias, modName(mod));
  }
  return out;
}

export interface ModuleClosure {
  /** Paths (relative to the kernel version's directory) of every module kept. */
  keep: Set<string>;
  /** Names asked for that are neither a module nor built in. */
  unknown: string[];
}

/**
 * Every wanted module, its modules.dep dependencies and its soft
 * dependencies, transitively. Built-in names need nothing.
 */
export function moduleClosure(
  wanted: string[],
  tables: {
    dep: ReturnType<typeof parseModulesDep>;
    builtin: Set<string>;
    softdep?: Map<string, string[]>;
    alias?: Map<string, string>;
  },
): ModuleClosure {
  const byPath = new Map([...tables.dep.entries()].map(([name, m]) => [m.path, name]));
  const keep = new Set<string>();
  const unknown: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string, soft: boolean) => {
    const n = modName(name);
    if (seen.has(n)) return;
    seen.add(n);
    const m = tables.dep.get(n) ?? tables.dep.get(tables.alias?.get(name) ?? "");
    if (!m) {
      // A soft dependency may name an alias of something built in: nothing to keep.
      if (!soft && !tables.builtin.has(n)) unknown.push(name);
      return;
    }
    keep.add(m.path);
    for (const d of m.deps) {
      const dn = byPath.get(d);
      if (dn) visit(dn, false);
      else keep.add(d);
    }
    for (const s of tables.softdep?.get(byPath.get(m.path) ?? n) ?? []) visit(s, true);
  };
  for (const w of wanted) visit(w, false);
  return { keep, unknown };
}

/** Where the names of the dropped modules are kept in the image (for whoever misses one). */
export const DROPPED_LIST = "var/lib/kiln/modules-dropped";

/**
 * `kernel.keep_modules: needed`: delete every module under kernel/ the spec
 * does not need (the cloud kernel's 1,100 modules are ~26 MiB compressed,
 * most of it drivers for hardware no VM has), then run depmod so modprobe
 * and the initrd see only what is there. Runs before the initrd is made.
 */
export async function pruneModules(ctx: BuildContext, version: string): Promise<void> {
  const dir = join(ctx.root, "usr/lib/modules", version);
  if (keepModulesPolicy(ctx.spec) !== "needed" || !existsSync(join(dir, "modules.dep"))) return;
  const read = (f: string) =>
    existsSync(join(dir, f)) ? readFile(join(dir, f), "utf8") : Promise.resolve("");
  const dep = parseModulesDep(await read("modules.dep"));
  const builtin = new Set(
    (await read("modules.builtin"))
      .split("\n")
      .filter(Boolean)
      .map((p) => modName(p.split("/").pop()!.replace(/\.ko$/, ""))),
  );
  const { keep, unknown } = moduleClosure(neededModules(ctx.spec), {
    dep,
    builtin,
    softdep: parseSoftdeps(await read("modules.softdep")),
    alias: parseAliases(await read("modules.alias")),
  });
  const asked = new Set(ctx.spec.kernel.extra_modules.map(modName));
  const missing = unknown.filter((n) => asked.has(modName(n)));
  if (missing.length)
    throw new KilnError(
      "SPEC_KERNEL_MODULE",
      `kernel ${version} has no module ${missing.join(", ")} (kernel.extra_modules)`,
      { hint: "a module's name is its file name without .ko (modinfo NAME on a machine with it)" },
    );

  const dropped: string[] = [];
  let droppedBytes = 0;
  const deferred = ctx.deferredModules;
  if (deferred) {
    ctx.deferredModules = undefined;
    // Both chose by newestKernel, and no spec file goes into /boot when modules are deferred.
    if (deferred.version !== version)
      throw new KilnError("INTERNAL", `modules of ${deferred.version} deferred, kernel ${version}`);
    const picked = await unpackKept(ctx, deferred, keep);
    dropped.push(...picked.dropped);
    droppedBytes += picked.droppedBytes;
  }
  for (const file of await filesUnder(join(dir, "kernel"))) {
    const rel = relative(dir, file);
    if (keep.has(rel)) continue;
    droppedBytes += (await stat(file)).size;
    dropped.push(rel);
    await rm(file);
  }
  if (existsSync(join(dir, "kernel"))) await removeEmptyDirs(join(dir, "kernel"));
  await inRoot(ctx.root, "depmod", [version]);
  const nameOf = (p: string) =>
    modName(
      p
        .split("/")
        .pop()!
        .replace(/\.ko(\.zst|\.xz|\.gz)?$/, ""),
    );
  await mkdir(join(ctx.root, "var/lib/kiln"), { recursive: true });
  await writeFile(
    join(ctx.root, DROPPED_LIST),
    `# kiln kernel.keep_modules: needed dropped these modules of ${version}; kernel.extra_modules keeps one\n${dropped.map(nameOf).sort().join("\n")}\n`,
  );
  ctx.facts.modules = {
    policy: "needed",
    kept: [...keep].map(nameOf).sort(),
    dropped: dropped.length,
    droppedBytes,
    list: `/${DROPPED_LIST}`,
  };
  ctx.detail(`${keep.size} modules kept, ${dropped.length} dropped`);
}

/** The kernel version the build uses: the last of /boot's vmlinuz-VERSION names, sorted. */
export function newestKernel(bootNames: string[]): string | undefined {
  return bootNames
    .filter((f) => f.startsWith("vmlinuz-"))
    .map((f) => f.slice("vmlinuz-".length))
    .sort()
    .at(-1);
}

/**
 * Which modules to leave in the cached root's tar when it is unpacked: all of
 * the newest kernel's kernel/ tree, when the spec keeps only the needed ones
 * and the kernel step will pick them (it unpacks those alone, unpackKept).
 * A rebuild otherwise wrote the cloud kernel's 1,359 module files (88 MiB)
 * only to delete nine in ten of them and then replace the rest with the
 * cached compressed tree. Nothing is deferred for a spec whose files go
 * into /boot or the module tree, or a root without modules.dep (nothing is
 * pruned then).
 */
export async function modulesToDefer(
  ctx: Pick<BuildContext, "spec" | "plan">,
  tar: string,
): Promise<DeferredModules | undefined> {
  const { spec } = ctx;
  if (keepModulesPolicy(spec) !== "needed" || !ctx.plan.steps.some((s) => s.id === "kernel"))
    return undefined;
  if (spec.files.some((f) => /^\/(boot|usr\/lib\/modules)(\/|$)/.test(f.path))) return undefined;
  const members = await kernelMembers(tar);
  const strip = (n: string) => n.replace(/^\.\//, "");
  const version = newestKernel(
    members
      .map((m) => strip(m.name))
      .filter((n) => n.startsWith("boot/"))
      .map((n) => n.slice(5)),
  );
  if (!version) return undefined;
  const dep = members.find((m) => strip(m.name) === `usr/lib/modules/${version}/modules.dep`);
  if (!dep) return undefined;
  const dir = dep.name.replace(/modules\.dep$/, "kernel/");
  return {
    tar,
    version,
    dir,
    members: members.filter((m) => m.name.startsWith(dir)),
  };
}

/**
 * The cached root's /boot and module-tree members. The tar never changes
 * (its name is its content's key), so they are listed once, into a file
 * beside it: reading 6,175 headers took 0.6 s of every rebuild.
 */
async function kernelMembers(tar: string): Promise<Pick<TarMember, "name" | "type" | "size">[]> {
  const index = kernelIndexOf(tar);
  if (existsSync(index)) return JSON.parse(await readFile(index, "utf8"));
  const members = (
    await listTar(tar, {
      maxMembers: 1_000_000,
      code: "ROOT_CACHE_BAD",
      what: `the cached root ${basename(tar)}`,
    })
  )
    .filter((m) => /^(\.\/)?(boot|usr\/lib\/modules)\//.test(m.name))
    .map(({ name, type, size }) => ({ name, type, size }));
  await writeFile(`${index}.${process.pid}`, JSON.stringify(members));
  await rename(`${index}.${process.pid}`, index);
  return members;
}

/** GNU tar's pattern for what modulesToDefer leaves in the tar. */
export function deferredPattern(d: DeferredModules): string {
  return d.dir.replace(/\/$/, "");
}

/**
 * Unpack from the cached root's tar the modules pruneModules keeps, with the
 * directories above them (so those keep the tar's modes and owners), and
 * say what stayed behind.
 */
export async function unpackKept(
  ctx: Pick<BuildContext, "root" | "work">,
  d: DeferredModules,
  keep: Set<string>,
): Promise<{ dropped: string[]; droppedBytes: number }> {
  const top = d.dir.replace(/kernel\/$/, "");
  const dirs = new Set<string>();
  for (const rel of keep)
    for (let p = dirname(rel); p !== "." && p !== "/"; p = dirname(p)) dirs.add(p);
  const wanted: string[] = [];
  const dropped: string[] = [];
  let droppedBytes = 0;
  for (const m of d.members) {
    const rel = m.name.slice(top.length).replace(/\/$/, "");
    if (m.type === "5") {
      if (dirs.has(rel)) wanted.push(m.name);
    } else if (keep.has(rel)) wanted.push(m.name);
    else {
      dropped.push(rel);
      droppedBytes += m.size;
    }
  }
  const list = join(ctx.work, "modules-kept.list");
  await writeFile(list, `${wanted.join("\n")}\n`);
  await extractTree(d.tar, ctx.root, {}, { only: list });
  return { dropped, droppedBytes };
}

async function filesUnder(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }))
    if (!e.isDirectory()) out.push(join(e.parentPath, e.name));
  return out;
}

async function removeEmptyDirs(dir: string): Promise<boolean> {
  let empty = true;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory() && (await removeEmptyDirs(join(dir, e.name)))) continue;
    empty = false;
  }
  if (empty) await rm(dir, { recursive: true });
  return empty;
}
