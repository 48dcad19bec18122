import { chmod, copyFile, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { readAsset } from "../../util/assets.js";
import { hostArch } from "../../util/binfmt.js";
import { KilnError, ToolMissingError } from "../../util/errors.js";
import { exec, which } from "../../util/exec.js";
import { foreignDeb } from "../../util/foreign-deb.js";
import { sha256File } from "../../util/hash.js";
import { packageFor } from "../../util/tools.js";
import type { BuildContext } from "../context.js";
import { kernelCmdline } from "./disk.js";

/** Modules the netboot initrd loads (with their dependencies): NIC, loop, squashfs, overlay. */
export const NETBOOT_MODULES = [
  "virtio_pci",
  "virtio_net",
  "loop",
  "squashfs",
  "overlay",
  // Install mode writes the machine's disk: the disk controllers of VMs and servers.
  "virtio_blk",
  "virtio_scsi",
  "sd_mod",
  "nvme",
  "ahci",
];

/**
 * A netboot bundle: the kernel, a small busybox initrd that fetches the root
 * filesystem over HTTP and runs it from RAM under a tmpfs overlay, the root
 * filesystem as zstd squashfs, and an iPXE script.
 */
export async function netbootStep(ctx: BuildContext): Promise<string> {
  const version = ctx.facts.kernelVersion!;
  const out = join(ctx.stage, `${ctx.spec.name}.netboot`);
  await mkdir(out, { recursive: true });
  await copyFile(join(ctx.root, "boot", `vmlinuz-${version}`), join(out, "vmlinuz"));
  // The root image first: its hash and size go into the initrd, which refuses any other image.
  const squashfs = join(out, "root.squashfs");
  await exec(
    "mksquashfs",
    [ctx.root, squashfs, "-comp", "zstd", "-noappend", "-quiet", "-e", "boot"],
    {
      onLine: (l) => ctx.detail(l),
    },
  );
  await makeInitrd(ctx, version, join(out, "initrd.img"), {
    modules: NETBOOT_MODULES,
    files: [
      { asset: "netboot/init", to: "init" },
      { asset: "netboot/udhcpc.script", to: "etc/udhcpc.script" },
      { asset: "netboot/netinstall", to: "bin/kiln-netinstall" },
      {
        text: rootRecord(await sha256File(squashfs), (await stat(squashfs)).size),
        to: "etc/kiln-root",
      },
    ],
  });
  await writeFile(join(out, "boot.ipxe"), ipxeScript(kernelCmdline(ctx.spec)));
  // `kiln serve` adds these to the kernel arguments it hands out.
  await writeFile(join(out, "cmdline"), `${kernelCmdline(ctx.spec)}\n`);
  return out;
}

/** What the initrd checks the fetched root image against (read by assets/netboot/init). */
export function rootRecord(sha256: string, bytes: number): string {
  if (!/^[0-9a-f]{64}$/.test(sha256) || !Number.isSafeInteger(bytes) || bytes <= 0)
    throw new KilnError("NETBOOT_ROOT", `bad root image record: sha256 ${sha256}, ${bytes} bytes`);
  return `sha256=${sha256}\nbytes=${bytes}\n`;
}

/**
 * Standalone script for any HTTP server: iPXE resolves kernel and initrd
 * against the script's own URL; the initrd needs the absolute URL of the root
 * image, which `kiln serve` fills in per machine, or `${base}` set beforehand.
 */
export function ipxeScript(cmdline: string): string {
  return [
    "#!ipxe",
    "# kiln netboot bundle. Set ${base} to the URL of this directory (ending in /) before chaining here;",
    "# `kiln serve` writes per-machine scripts itself.",
    "isset ${base} || goto nobase",
    // UEFI kernels load their initrd through the EFI stub by the name given in initrd=.
    `kernel \${base}vmlinuz initrd=initrd.img kiln.root=\${base}root.squashfs ${cmdline}`.trimEnd(),
    "initrd --name initrd.img ${base}initrd.img",
    "boot",
    ":nobase",
    "echo kiln: set base to the URL of this bundle first, e.g. set base http://server/netboot/",
    "exit 1",
    "",
  ].join("\n");
}

/**
 * A busybox initrd: a static busybox of the image's architecture, the given scripts (made
 * executable) and texts and the kernel modules listed with their dependencies, loaded
 * in order by /init from /etc/kiln-modules.
 */
export async function makeInitrd(
  ctx: BuildContext,
  version: string,
  target: string,
  o: {
    modules: string[];
    /** An asset (made executable) or a text made by the build, at `to` in the initrd. */
    files: ({ asset: string; to: string } | { text: string; to: string })[];
    name?: string;
  },
): Promise<void> {
  const busybox = await busyboxFor(ctx.spec.architecture);
  const tree = join(ctx.work, o.name ?? "netboot-initrd");
  for (const d of ["bin", "etc", `lib/modules`]) await mkdir(join(tree, d), { recursive: true });
  await copyFile(busybox, join(tree, "bin/busybox"));
  await chmod(join(tree, "bin/busybox"), 0o755);
  for (const f of o.files) {
    await mkdir(dirname(join(tree, f.to)), { recursive: true });
    if ("asset" in f) await writeFile(join(tree, f.to), readAsset(f.asset), { mode: 0o755 });
    else await writeFile(join(tree, f.to), f.text, { mode: 0o644 });
  }

  const modDir = join(ctx.root, "usr/lib/modules", version);
  const deps = parseModulesDep(await readFile(join(modDir, "modules.dep"), "utf8"));
  const order = moduleLoadOrder(o.modules, deps);
  const names: string[] = [];
  for (const rel of order) {
    const name = rel
      .split("/")
      .pop()!
      .replace(/\.zst$|\.xz$/, "");
    const dest = join(tree, "lib/modules", name);
    // busybox insmod cannot decompress, so modules go in uncompressed.
    if (rel.endsWith(".zst")) await exec("zstd", ["-q", "-d", "-f", join(modDir, rel), "-o", dest]);
    else await copyFile(join(modDir, rel), dest);
    names.push(name);
  }
  await writeFile(join(tree, "etc/kiln-modules"), `${names.join("\n")}\n`);
  await mkdir(dirname(target), { recursive: true });
  await exec("sh", [
    "-c",
    'cd "$1" && find . | cpio --quiet -o -H newc | zstd -q -19 -T0 > "$2"',
    "sh",
    tree,
    target,
  ]);
}

/** modules.dep: "path: dep dep" per line → map from module name to its path and dependency paths. */
export function parseModulesDep(text: string): Map<string, { path: string; deps: string[] }> {
  const out = new Map<string, { path: string; deps: string[] }>();
  for (const line of text.split("\n")) {
    const [path, rest] = line.split(":");
    if (!path || rest === undefined) continue;
    const name = path
      .split("/")
      .pop()!
      .replace(/\.ko(\.zst|\.xz|\.gz)?$/, "")
      .replace(/-/g, "_");
    out.set(name, { path, deps: rest.trim().split(/\s+/).filter(Boolean) });
  }
  return out;
}

/** Paths in an order insmod can load them: every dependency before its user, each once. */
export function moduleLoadOrder(
  wanted: string[],
  deps: Map<string, { path: string; deps: string[] }>,
): string[] {
  const byPath = new Map([...deps.values()].map((m) => [m.path, m]));
  const order: string[] = [];
  const visit = (path: string) => {
    if (order.includes(path)) return;
    for (const d of byPath.get(path)?.deps ?? []) visit(d);
    order.push(path);
  };
  for (const w of wanted) {
    const m = deps.get(w.replace(/-/g, "_"));
    // Built into this kernel: nothing to load.
    if (m) visit(m.path);
  }
  return order;
}

/** The host's static busybox, or for another architecture Debian's busybox-static of that one. */
async function busyboxFor(arch: string): Promise<string> {
  if (arch !== hostArch())
    return join(await foreignDeb("busybox-static", arch, "bin/busybox"), "bin/busybox");
  const busybox = (await which("busybox")) ?? "";
  if (!busybox) throw new ToolMissingError("busybox", packageFor("busybox"));
  return busybox;
}
