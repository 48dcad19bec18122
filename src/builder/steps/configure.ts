import { existsSync } from "node:fs";
import { chmod, cp, mkdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { CLOUDS, cloudsOf } from "../../config/clouds.js";
import { trimmed } from "../../config/schema.js";
import { containerOnly } from "../../plan/plan.js";
import { networkdUnits } from "../../render/networkd.js";
import { readAsset } from "../../util/assets.js";
import { KilnError } from "../../util/errors.js";
import { inRoot } from "../chroot.js";
import type { BuildContext } from "../context.js";
import { agentStep } from "./agent.js";
import { growStep } from "./grow.js";
import { mirrorStep } from "./mirror.js";
import { updaterStep } from "./updater.js";

/** Host name, time zone, locale, network, first-boot units, services. Files go in after users. */
export async function configureStep(ctx: BuildContext): Promise<void> {
  const { spec, root } = ctx;
  await writeFile(join(root, "etc/hostname"), `${spec.hostname}\n`);
  await writeFile(
    join(root, "etc/hosts"),
    `127.0.0.1\tlocalhost\n127.0.1.1\t${spec.hostname}\n::1\t\tlocalhost ip6-localhost ip6-loopback\n`,
  );

  const zone = join(root, "usr/share/zoneinfo", spec.timezone);
  if (!existsSync(zone))
    throw new KilnError("SPEC_TIMEZONE", `unknown time zone ${spec.timezone}`, {
      hint: "use a name such as Europe/Berlin or Etc/UTC",
    });
  await rm(join(root, "etc/localtime"), { force: true });
  await symlink(`/usr/share/zoneinfo/${spec.timezone}`, join(root, "etc/localtime"));
  await writeFile(join(root, "etc/timezone"), `${spec.timezone}\n`);

  if (spec.locale !== "C.UTF-8" && spec.locale !== "C") {
    const charset = spec.locale.split(".")[1] ?? "UTF-8";
    await writeFile(join(root, "etc/locale.gen"), `${spec.locale} ${charset}\n`);
    await inRoot(root, "locale-gen", []);
  }
  await writeFile(join(root, "etc/default/locale"), `LANG=${spec.locale}\n`);

  // Every machine must get its own identity when it boots. An empty file (not
  // "uninitialized") does that without systemd's first-boot preset-all pass,
  // which costs seconds under emulation and would redo what the build enabled.
  await writeFile(join(root, "etc/machine-id"), "");
  await cloudInitStep(ctx);
  await rm(join(root, "var/lib/dbus/machine-id"), { force: true });

  const netDir = join(root, "etc/systemd/network");
  await mkdir(netDir, { recursive: true });
  for (const [name, text] of networkdUnits(spec.network.interfaces))
    await writeFile(join(netDir, name), text);
  const staticDns = spec.network.interfaces.flatMap((i) => i.dns);
  if (staticDns.length) {
    await rm(join(root, "etc/resolv.conf"), { force: true });
    await writeFile(
      join(root, "etc/resolv.conf"),
      staticDns.map((d) => `nameserver ${d}\n`).join(""),
    );
  }

  const enable = ["systemd-networkd.service"];
  if (spec.disk.layout === "ab") {
    await updaterStep(root, spec);
    enable.push("kiln-health.service");
  }
  if (spec.disk.layout === "raid1" && !containerOnly(spec)) await mirrorStep(ctx);
  // A root that fills whatever disk it is written to (a container has no disk).
  if (!containerOnly(spec)) enable.push(...(await growStep(root, spec)));
  if (spec.agent) {
    await agentStep(root, spec.agent);
    enable.push("kiln-agent.service");
  }
  if (existsSync(join(root, "usr/sbin/sshd"))) {
    // Host keys made while building would be shared by every machine: drop them, make them at first boot.
    await installAsset(
      root,
      "kiln-ssh-keygen.service",
      "etc/systemd/system/kiln-ssh-keygen.service",
    );
    await inRoot(root, "sh", ["-c", "rm -f /etc/ssh/ssh_host_*"]);
    await mkdir(join(root, "etc/ssh/sshd_config.d"), { recursive: true });
    await writeFile(
      join(root, "etc/ssh/sshd_config.d/10-kiln-hostkey.conf"),
      "# kiln: one ed25519 host key, made at first boot\nHostKey /etc/ssh/ssh_host_ed25519_key\n",
    );
    enable.push("kiln-ssh-keygen.service");
  }
  await systemctl(root, "enable", [...enable, ...spec.services.enable]);
  await systemctl(root, "disable", spec.services.disable);
  await systemctl(root, "mask", [
    ...spec.services.mask,
    ...(trimmed(spec) ? await presentUnits(root, minimalMasked(spec)) : []),
  ]);
}

/**
 * Boot-time work a small server does not need, masked by the minimal profile:
 * e2scrub's stale-snapshot cleanup (no LVM here), gettys on tty2-6 for
 * systems without logind, the debug, tracing, huge-page, FUSE and configfs
 * file systems and the modules loaded ahead for them (each modprobe@ unit
 * costs about 1.5 s of the one emulated CPU thread under TCG), and the
 * generator of network configuration from the kernel command line (kiln
 * writes networkd's own). A module is still loaded when something uses it.
 * loop and dm_mod are loaded ahead still where RAUC bundles (A/B layout) or
 * portable services (the agent) mount images through them at boot.
 */
export const MINIMAL_MASKED = [
  "e2scrub_reap.service",
  "getty-static.service",
  "sys-kernel-debug.mount",
  "sys-kernel-tracing.mount",
  "sys-kernel-config.mount",
  "sys-fs-fuse-connections.mount",
  "dev-hugepages.mount",
  "systemd-network-generator.service",
  "modprobe@drm.service",
  "modprobe@fuse.service",
  "modprobe@efi_pstore.service",
  "modprobe@configfs.service",
];

function minimalMasked(spec: BuildContext["spec"]): string[] {
  const images = spec.disk.layout === "ab" || Boolean(spec.agent);
  return images
    ? MINIMAL_MASKED
    : [...MINIMAL_MASKED, "modprobe@loop.service", "modprobe@dm_mod.service"];
}

/** The units (or, for an instance such as modprobe@drm.service, its template) the root has. */
async function presentUnits(root: string, units: string[]): Promise<string[]> {
  const file = (u: string) => u.replace(/@[^.]+\./, "@.");
  return units.filter(
    (u) =>
      existsSync(join(root, "usr/lib/systemd/system", file(u))) ||
      existsSync(join(root, "lib/systemd/system", file(u))),
  );
}

/** Spec `files:` (after users so owners exist). */
export async function filesStep(ctx: BuildContext): Promise<void> {
  for (const f of ctx.spec.files) {
    const dest = join(ctx.root, f.path);
    await mkdir(dirname(dest), { recursive: true });
    if (f.content !== undefined) {
      await writeFile(dest, f.content);
    } else if (f.source) {
      if (!existsSync(f.source))
        throw new KilnError("SPEC_FILE_SOURCE", `files: source ${f.source} does not exist`);
      const isDir = (await stat(f.source)).isDirectory();
      await cp(f.source, dest, { recursive: isDir, force: true, verbatimSymlinks: true });
    }
    if (f.mode) await chmod(dest, Number.parseInt(f.mode, 8));
    if (f.owner) await inRoot(ctx.root, "chown", ["-R", f.owner, f.path]);
  }
}

export async function systemctl(root: string, verb: string, units: string[]): Promise<void> {
  if (!units.length) return;
  await inRoot(root, "systemctl", [verb, ...units], {
    hint: `a unit named in services.${verb} may not exist in the image: is its package in packages:?`,
  });
}

async function installAsset(root: string, asset: string, to: string): Promise<void> {
  const text = readAsset(asset);
  await mkdir(dirname(join(root, to)), { recursive: true });
  await writeFile(join(root, to), text);
}

/**
 * An image for public clouds looks only for their metadata (ds-identify
 * otherwise probes every source it knows, slowly); None last, so a machine
 * elsewhere still boots. kiln's networkd configuration (DHCP on every
 * Ethernet) already fits all three clouds, so cloud-init writes none of its own.
 */
async function cloudInitStep(ctx: BuildContext): Promise<void> {
  const clouds = cloudsOf(ctx.spec);
  if (!clouds.length) return;
  const dir = join(ctx.root, "etc/cloud/cloud.cfg.d");
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, "90-kiln-datasource.cfg"),
    `# Written by kiln for outputs: [${clouds.join(", ")}]\n` +
      `datasource_list: [${[...clouds.map((c) => CLOUDS[c].datasource), "None"].join(", ")}]\n` +
      "network: {config: disabled}\n",
  );
}
