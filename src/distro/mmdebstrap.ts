import type { Spec } from "../spec/schema.js";
import { distroDriver } from "./index.js";

/** What the minimal profile keeps out of the image (dpkg path filters). */
export const MINIMAL_PATH_FILTERS = [
  "path-exclude=/usr/share/man/*",
  "path-exclude=/usr/share/doc/*",
  "path-include=/usr/share/doc/*/copyright",
  "path-exclude=/usr/share/info/*",
  "path-exclude=/usr/share/locale/*",
  "path-include=/usr/share/locale/locale.alias",
  "path-exclude=/usr/share/lintian/*",
  "path-exclude=/usr/share/linda/*",
  "path-exclude=/usr/share/bash-completion/*",
  "path-exclude=/usr/lib/udev/hwdb.d/*",
];

export interface RootfsRecipe {
  release: string;
  mirror: string;
  arch: string;
  packages: string[];
  keyring?: string;
  components: string[];
  /** The mmdebstrap arguments, minus the output path and cache hooks. */
  args: string[];
}

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
  // kiln-agent fetches with curl, verifies the signed add-on list with openssl
  // and attaches with portablectl (systemd-container).
  const agent = spec.agent
    ? ["curl", "systemd-container", ...(spec.agent.insecure_unsigned ? [] : ["openssl"])]
    : [];
  // A container image needs no kernel, initrd or device manager; systemd stays for --boot.
  const base = o.container
    ? ["systemd-sysv"]
    : [...d.bootPackages, kernel, ...initrd, ...updater, ...agent];
  const packages = unique([...base, ...spec.packages]).sort();
  if (spec.locale !== "C.UTF-8" && spec.locale !== "C") packages.push("locales");

  const args = [
    "--variant=minbase",
    `--architectures=${arch}`,
    `--components=${components.join(",")}`,
    '--aptopt=APT::Install-Recommends "false"',
    '--aptopt=Acquire::Languages "none"',
    "--hook-dir=/usr/share/mmdebstrap/hooks/maybe-merged-usr",
    `--include=${packages.join(",")}`,
  ];
  if (spec.profile === "minimal") for (const f of MINIMAL_PATH_FILTERS) args.push(`--dpkgopt=${f}`);
  if (keyring) args.push(`--keyring=${keyring}`);
  return {
    release: spec.distribution.release,
    mirror,
    arch,
    packages,
    components,
    args,
    ...(keyring ? { keyring } : {}),
  };
}

function unique<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}
