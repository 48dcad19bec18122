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

/** zstd-compressed qcow2 (QEMU >= 5.1 reads it); much faster to write than zlib. */
export async function qcow2Step(ctx: BuildContext): Promise<string> {
  const raw = join(ctx.stage, `${ctx.spec.name}.raw`);
  const out = join(ctx.stage, `${ctx.spec.name}.qcow2`);
  await exec("qemu-img", [
    "convert",
    "-c",
    "-o",
    "compression_type=zstd",
    "-O",
    "qcow2",
    "-m",
    "4",
    "-W",
    raw,
    out,
  ]);
  if (!ctx.spec.outputs.includes("disk")) await exec("rm", ["-f", raw]);
  return out;
}

/** The root filesystem as a directory (moved, not copied: it is the last use of it). */
export async function directoryStep(ctx: BuildContext): Promise<string> {
  const out = join(ctx.stage, `${ctx.spec.name}.rootfs`);
  await rename(ctx.root, out);
  return out;
}
