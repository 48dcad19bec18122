import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Spec } from "../../config/schema.js";
import { readAsset } from "../../util/assets.js";
import { KilnError } from "../../util/errors.js";
import { log } from "../../util/log.js";

/**
 * kiln-agent in the image: the POSIX sh agent, its unit, its configuration
 * and the public key it verifies the signed add-on list with.
 */
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
  if (agent.keyring) {
    if (!existsSync(agent.keyring))
      throw new KilnError("AGENT_KEYRING", `agent.keyring ${agent.keyring} does not exist`, {
        hint: "make a key pair with `kiln keys addons DIR` and point agent.keyring at DIR/addons.pub.pem",
      });
    await copyFile(agent.keyring, join(root, "etc/kiln/agent.pub.pem"));
  } else {
    log.warn(
      "agent.insecure_unsigned: kiln-agent will attach whatever anyone on the network hands it, as root",
    );
  }
  await writeFile(
    join(root, "etc/kiln/agent.conf"),
    `# Written by kiln from the spec's agent: section.\nURL=${agent.url.replace(/\/$/, "")}\nINTERVAL=${agent.interval}\n${agent.keyring ? "KEY=/etc/kiln/agent.pub.pem\n" : "INSECURE_UNSIGNED=1\n"}${agent.profiles ? `PROFILES="${agent.profiles.join(" ")}"\n` : ""}`,
  );
}
