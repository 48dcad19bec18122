import { rename } from "node:fs/promises";
import { join } from "node:path";
import type { DiskConversion } from "../../config/schema.js";
import { DISK_CONVERSIONS } from "../../config/schema.js";
import { exec } from "../../util/exec.js";
import { archiveTree } from "../../util/tar.js";
import type { BuildContext } from "../context.js";
import { mirrorImages, mirrorsOf } from "./mirror.js";

export async function tarStep(ctx: BuildContext): Promise<string> {
  const out = join(ctx.stage, `${ctx.spec.name}.tar.zst`);
  await archiveTree(ctx.root, out, { compress: "zstd -T0 -12" });
  return out;
}

const QEMU_IMG: Record<DiskConversion, { ext: string; args: string[] }> = {
  // zstd-compressed (QEMU >= 5.1 reads it): much faster to write than zlib. Each
  // cluster is compressed alone: 256 KiB ones give zstd more to work with than
  // the default 64 KiB (minimal: 56.1 -> 54.0 MiB, 1.8 -> 1.3 s); larger ones
  // lose more in half-used clusters than they gain.
  qcow2: {
    ext: "qcow2",
    args: ["-c", "-o", "compression_type=zstd,cluster_size=256k", "-O", "qcow2"],
  },
  // monolithicSparse: what VMware Workstation/Player and VirtualBox open as is.
  vmdk: { ext: "vmdk", args: ["-O", "vmdk"] },
  vdi: { ext: "vdi", args: ["-O", "vdi"] },
  // dynamic: grows as the guest writes, as Hyper-V makes them.
  vhdx: { ext: "vhdx", args: ["-O", "vhdx", "-o", "subformat=dynamic"] },
};

/** One qemu-img conversion of the staged raw disk (of each, for a mirrored root). */
function convertStep(format: DiskConversion) {
  return async (ctx: BuildContext): Promise<string | string[]> => {
    const { spec } = ctx;
    const raws = mirrorImages(ctx.stage, spec.name, mirrorsOf(spec));
    const outs = mirrorImages(ctx.stage, spec.name, mirrorsOf(spec), QEMU_IMG[format].ext);
    // In-order writes (no -W): out of order, clusters land where the coroutines
    // race them and two conversions of one disk differ; ordered costs ~0.2 s.
    for (const [i, raw] of raws.entries())
      await exec("qemu-img", ["convert", ...QEMU_IMG[format].args, "-m", "4", raw, outs[i]!]);
    return outs.length > 1 ? outs : outs[0]!;
  };
}

/** Every conversion step, by output id. */
export const conversionSteps = Object.fromEntries(
  DISK_CONVERSIONS.map((f) => [f, convertStep(f)]),
) as Record<DiskConversion, (ctx: BuildContext) => Promise<string | string[]>>;

/** The root filesystem as a directory (moved, not copied: it is the last use of it). */
export async function directoryStep(ctx: BuildContext): Promise<string> {
  const out = join(ctx.stage, `${ctx.spec.name}.rootfs`);
  await Promise.all(ctx.rootReads);
  await rename(ctx.root, out);
  return out;
}
