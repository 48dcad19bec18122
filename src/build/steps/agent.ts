import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Spec } from "../../spec/schema.js";
import { readAsset } from "../../util/assets.js";

/** kiln-agent in the image: the POSIX sh agent, its unit and its configuration. */
export async function agentStep(root: string, agent: NonNullable<Spec["agent"]>): Promise<void> {
  await mkdir(join(root, "usr/lib/kiln-agent"), { recursive: true });
  const bin = join(root, "usr/lib/kiln-agent/kiln-agent");
  await writeFile(bin, readAsset("kiln-agent/kiln-agent"));
  await chmod(bin, 0o755);
  await writeFile(
    join(root, "etc/systemd/system/kiln-agent.service"),
    readAsset("kiln-agent/kiln-agent.service"),
  );
  await mkdir(join(root, "etc/kiln"), { recursive: true });
  await writeFile(
    join(root, "etc/kiln/agent.conf"),
    `# Written by kiln from the spec's agent: section.\nURL=${agent.url.replace(/\/$/, "")}\nINTERVAL=${agent.interval}\n`,
  );
}
