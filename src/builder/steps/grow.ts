import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Spec } from "../../config/schema.js";

/**
 * Growing to the disk at first boot, as Debian's cloud images do, with
 * systemd's own tools (both in bookworm's `systemd` package): systemd-repart
 * moves the GPT's backup header to the end of a bigger disk and grows the
 * last partition (the single layout's root, the A/B layout's data), and
 * systemd-growfs grows its filesystem while it is mounted. Both run on every
 * boot and do nothing once the disk is filled.
 *
 * Only a disk's root grows: network-boot and live systems run from RAM and
 * have no `root=` on their kernel command line, and containers have no disk.
 * An image with cloud-init leaves it to cloud-init's growpart and resizefs
 * (measured: with both, cloud-init's resizefs failed and first boot ended in
 * "status: error" without running the seed's runcmd).
 */
export function growFiles(spec: Spec): Record<string, string> {
  // A mirror grows only as a whole (every member, the array, then the filesystem): not at boot.
  if (spec.disk.layout === "raid1") return {};
  const onDisk =
    "# kiln: only a system booted from a disk (root= on the kernel command line) grows it,\n" +
    "# and not one with cloud-init, whose growpart and resizefs grow it (two growers race)\n" +
    "[Unit]\nConditionKernelCommandLine=root\nConditionPathExists=!/usr/bin/cloud-init\n";
  const files: Record<string, string> = {
    "etc/systemd/system/systemd-repart.service.d/kiln.conf": onDisk,
  };
  const part = (type: string, why: string, weight?: number) =>
    `# kiln: ${why}\n[Partition]\nType=${type}\n${weight === undefined ? "" : `Weight=${weight}\n`}`;
  if (spec.disk.layout === "ab") {
    // Definitions match existing partitions in order; weight 0 keeps a slot at its size.
    files["usr/lib/repart.d/10-root-a.conf"] = part("root", "slot A keeps its size", 0);
    files["usr/lib/repart.d/11-root-b.conf"] = part("root", "slot B keeps its size", 0);
    // Its filesystem grows through x-systemd.growfs in /etc/fstab.
    files["usr/lib/repart.d/20-data.conf"] = part(
      "linux-generic",
      "the data partition fills the disk",
    );
  } else {
    files["usr/lib/repart.d/50-root.conf"] = part("root", "the root partition fills the disk");
    files["etc/systemd/system/kiln-growfs-root.service"] = GROWFS_ROOT;
  }
  return files;
}

/**
 * What `x-systemd.growfs` on `/` would make, without an fstab entry for the
 * root (which would name one device for every way the image boots).
 */
const GROWFS_ROOT = `[Unit]
Description=Grow the root file system to its partition
Documentation=man:systemd-growfs(8)
DefaultDependencies=no
After=systemd-repart.service systemd-remount-fs.service
Before=local-fs.target shutdown.target
Conflicts=shutdown.target
ConditionVirtualization=!container
ConditionKernelCommandLine=root
# cloud-init's resizefs grows the root where cloud-init is installed.
ConditionPathExists=!/usr/bin/cloud-init

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/systemd/systemd-growfs /
TimeoutSec=0

[Install]
WantedBy=local-fs.target
`;

export async function growStep(root: string, spec: Spec): Promise<string[]> {
  const files = growFiles(spec);
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), text);
  }
  return files["etc/systemd/system/kiln-growfs-root.service"] ? ["kiln-growfs-root.service"] : [];
}
