import { rename } from "node:fs/promises";
import { join } from "node:path";
import { exec } from "../../util/exec.js";
import type { BuildContext } from "../context.js";

export async function tarStep(ctx: BuildContext): Promise<string> {
  const out = join(ctx.stage, `${ctx.spec.name}.tar.zst`);
  await exec("tar", [
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "-I",
    "zstd -T0 -12",
    "-C",
    ctx.root,
    "-cf",
    out,
    ".",
  ]);
  return out;
}

/** Formats converted from the raw disk with qemu-img, in build order. */
export const CONVERTED = ["qcow2", "vmdk", "vdi", "vhdx"] as const;
export type Converted = (typeof CONVERTED)[number];

const QEMU_IMG: Record<Converted, { ext: string; args: string[] }> = {
  // zstd-compressed (QEMU >= 5.1 reads it): much faster to write than zlib.
  qcow2: { ext: "qcow2", args: ["-c", "-o", "compression_type=zstd", "-O", "qcow2"] },
  // monolithicSparse: what VMware Workstation/Player and VirtualBox open as is.
  vmdk: { ext: "vmdk", args: ["-O", "vmdk"] },
  vdi: { ext: "vdi", args: ["-O", "vdi"] },
  // dynamic: grows as the guest writes, as Hyper-V makes them.
  vhdx: { ext: "vhdx", args: ["-O", "vhdx", "-o", "subformat=dynamic"] },
};

/** One qemu-img conversion of the staged raw disk; the raw goes once no later format needs it. */
export function convertStep(format: Converted) {
  return async (ctx: BuildContext): Promise<string> => {
    const raw = join(ctx.stage, `${ctx.spec.name}.raw`);
    const out = join(ctx.stage, `${ctx.spec.name}.${QEMU_IMG[format].ext}`);
    await exec("qemu-img", ["convert", ...QEMU_IMG[format].args, "-m", "4", "-W", raw, out]);
    const later = CONVERTED.slice(CONVERTED.indexOf(format) + 1);
    const outputs = ctx.spec.outputs as string[];
    if (!outputs.includes("disk") && !later.some((f) => outputs.includes(f)))
      await exec("rm", ["-f", raw]);
    return out;
  };
}

export const qcow2Step = convertStep("qcow2");

/** The root filesystem as a directory (moved, not copied: it is the last use of it). */
export async function directoryStep(ctx: BuildContext): Promise<string> {
  const out = join(ctx.stage, `${ctx.spec.name}.rootfs`);
  await rename(ctx.root, out);
  return out;
}
