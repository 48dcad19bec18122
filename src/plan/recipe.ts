import { cloudsOf } from "../config/clouds.js";
import { type Spec, trimmed } from "../config/schema.js";
import { distroDriver } from "../distro/index.js";
import { APT_OFFERS, MINIMAL_PATH_FILTERS, type RootfsRecipe } from "../distro/mmdebstrap.js";

/**
 * The mmdebstrap call for a spec, as data: the plan prints it, unit tests
 * check it (Ubuntu included), and its hash is the root filesystem's cache key.
 */
export function rootfsRecipe(spec: Spec, o: { container?: boolean } = {}): RootfsRecipe {
  const d = distroDriver(spec.distribution.id);
  const arch = spec.architecture;
  const mirror = spec.distribution.mirror ?? d.defaultMirror(arch);
  const components = spec.distribution.components ?? [...d.components];
  const keyring = spec.distribution.keyring ?? d.keyring;
  const kernel = spec.kernel.package ?? d.defaultKernel(arch);
  const initrd = spec.kernel.initrd === "tiny" ? ["tiny-initramfs"] : ["initramfs-tools"];
  // The device side of A/B updates: RAUC (client and D-Bus service) and grub-editenv for its GRUB backend.
  const updater = spec.disk.layout === "ab" ? ["rauc", "rauc-service", "grub-common"] : [];
  // A mirrored root: mdadm assembles it in the initrd (its initramfs-tools hook); sfdisk
  // (fdisk) copies the partition table to a replacement disk (kiln-raid-replace).
  const raid = spec.disk.layout === "raid1" ? ["fdisk", "mdadm"] : [];
  // kiln-agent fetches with curl, verifies the signed add-on list with openssl
  // and attaches with portablectl (systemd-container).
  const agent = spec.agent
    ? ["curl", "systemd-container", ...(spec.agent.insecure_unsigned ? [] : ["openssl"])]
    : [];
  // A container image needs no kernel, initrd or device manager; systemd stays for --boot.
  const base = o.container
    ? ["systemd-sysv"]
    : [...d.bootPackages, kernel, ...initrd, ...updater, ...raid, ...agent];
  // A bus for the tools an admin reaches for first (a container needs none: its host has one).
  const bus = !o.container && spec.dbus ? d.busPackages : [];
  // A public cloud's image configures itself from the cloud's metadata at first boot.
  const cloud = !o.container && cloudsOf(spec).length ? ["cloud-init"] : [];
  const packages = unique([
    ...base,
    ...bus,
    ...cloud,
    ...groupPackages(spec),
    ...spec.packages,
  ]).sort();
  if (spec.locale !== "C.UTF-8" && spec.locale !== "C") packages.push("locales");

  const args = [
    "--variant=minbase",
    `--architectures=${arch}`,
    '--aptopt=APT::Install-Recommends "false"',
    '--aptopt=Acquire::Languages "none"',
    "--hook-dir=/usr/share/mmdebstrap/hooks/maybe-merged-usr",
    `--include=${packages.join(",")}`,
  ];
  if (trimmed(spec)) for (const f of MINIMAL_PATH_FILTERS) args.push(`--dpkgopt=${f}`);
  // What the suites offered for the kernel when the root was made (apt's lists are gone
  // afterwards): the build and the image's own checks compare it with what is installed.
  if (!o.container)
    args.push(
      `--customize-hook=mkdir -p "$1/${APT_OFFERS.slice(1, APT_OFFERS.lastIndexOf("/"))}" && chroot "$1" apt-cache madison ${kernel} > "$1${APT_OFFERS}"`,
    );
  if (keyring) args.push(`--keyring=${keyring}`);
  const sources = d.sources({
    release: spec.distribution.release,
    arch,
    mirror,
    components,
    updates: spec.distribution.updates,
    security: spec.distribution.security,
    ...(spec.distribution.security_mirror
      ? { securityMirror: spec.distribution.security_mirror }
      : {}),
  });
  return {
    release: spec.distribution.release,
    mirror,
    arch,
    packages,
    ...(o.container ? {} : { kernel }),
    components,
    sources,
    args,
    ...(keyring ? { keyring } : {}),
  };
}

/** Packages the spec's groups imply (group sudo: sudo), for accounts the build makes. */
export function groupPackages(spec: Spec): string[] {
  const d = distroDriver(spec.distribution.id);
  const groups = new Set(spec.users.flatMap((u) => u.groups));
  return [...groups].flatMap((g) => (d.groupPackages[g] ? [d.groupPackages[g]] : []));
}

/** Why a spec's group grants nothing, for each group that does not (a build warning). */
export function inertGroups(spec: Spec): string[] {
  const d = distroDriver(spec.distribution.id);
  const groups = new Set(spec.users.flatMap((u) => u.groups));
  return [...groups].flatMap((g) => (d.inertGroups[g] ? [`group ${g}: ${d.inertGroups[g]}`] : []));
}

function unique<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}
