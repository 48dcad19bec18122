import { join } from "node:path";
import { exec } from "../../util/exec.js";
import type { BuildContext } from "../context.js";

/**
 * `outputs: [oci]`: an OCI image layout (a directory that skopeo pushes to
 * any registry), made by umoci: one layer holding the whole root filesystem,
 * tagged with the spec's version and `latest`.
 */
export async function ociStep(ctx: BuildContext): Promise<string> {
  const { spec } = ctx;
  const out = join(ctx.stage, `${spec.name}.oci`);
  const image = `${out}:${spec.version}`;
  await exec("umoci", ["init", "--layout", out]);
  await exec("umoci", ["new", "--image", image]);
  ctx.detail("layer");
  await exec("umoci", ["insert", "--image", image, ctx.root, "/"]);
  await exec("umoci", [
    "config",
    "--image",
    image,
    "--os",
    "linux",
    "--architecture",
    spec.architecture,
    "--author",
    "kiln",
    "--config.cmd",
    "/bin/bash",
    "--config.env",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--config.label",
    `org.opencontainers.image.title=${spec.name}`,
    "--config.label",
    `org.opencontainers.image.version=${spec.version}`,
  ]);
  await exec("umoci", ["tag", "--image", image, "latest"]);
  // `config` leaves the unconfigured manifest behind; gc drops it.
  await exec("umoci", ["gc", "--layout", out]);
  return out;
}
