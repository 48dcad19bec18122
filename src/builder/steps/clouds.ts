import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { CLOUDS, type CloudOutput } from "../../config/clouds.js";
import { exec } from "../../util/exec.js";
import type { BuildContext } from "../context.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/**
 * A sparse copy of the staged raw disk grown to a multiple of `unit` (the
 * space left empty; the GPT backup header moved to the new end), for clouds
 * that take only whole sizes.
 */
async function rawIn(ctx: BuildContext, dir: string, unit: number): Promise<string> {
  const raw = join(ctx.stage, `${ctx.spec.name}.raw`);
  await mkdir(dir, { recursive: true });
  const copy = join(dir, "disk.raw");
  await exec("cp", ["--sparse=always", raw, copy]);
  const { size } = await stat(copy);
  if (size % unit) {
    await exec("truncate", ["-s", String(Math.ceil(size / unit) * unit), copy]);
    await exec("sfdisk", ["--quiet", "--relocate", "gpt-bak-std", copy]);
  }
  return copy;
}

const STEPS: Record<CloudOutput, (ctx: BuildContext, out: string) => Promise<void>> = {
  // Compute Engine: the disk must be called disk.raw, a whole number of GiB,
  // in a gzipped tar of the oldgnu format (sparse, so the empty space costs nothing).
  gce: async (ctx, out) => {
    const dir = join(ctx.work, "gce");
    await rawIn(ctx, dir, GiB);
    await exec("tar", ["--format=oldgnu", "-S", "-czf", out, "-C", dir, "disk.raw"]);
    await rm(dir, { recursive: true, force: true });
  },
  // Azure: a fixed-size VHD whose virtual size is a whole number of MiB, exactly
  // (force_size: qemu-img would otherwise round to the VHD geometry).
  azure: async (ctx, out) => {
    const dir = join(ctx.work, "azure");
    // kiln's disks are whole MiB already: the staged disk is converted as it is.
    const staged = join(ctx.stage, `${ctx.spec.name}.raw`);
    const raw = (await stat(staged)).size % MiB ? await rawIn(ctx, dir, MiB) : staged;
    await exec("qemu-img", [
      ...["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on"],
      ...[raw, out],
    ]);
    await rm(dir, { recursive: true, force: true });
  },
  // EC2 VM import: a stream-optimized VMDK.
  aws: async (ctx, out) => {
    const raw = join(ctx.stage, `${ctx.spec.name}.raw`);
    await exec("qemu-img", [
      ...["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized"],
      ...[raw, out],
    ]);
  },
};

function cloudStep(cloud: CloudOutput) {
  return async (ctx: BuildContext): Promise<string> => {
    const out = join(ctx.stage, `${ctx.spec.name}${CLOUDS[cloud].suffix}`);
    await STEPS[cloud](ctx, out);
    return out;
  };
}

/** Every cloud output step, by output id. */
export const cloudSteps = {
  gce: cloudStep("gce"),
  azure: cloudStep("azure"),
  aws: cloudStep("aws"),
} satisfies Record<CloudOutput, (ctx: BuildContext) => Promise<string>>;
