import { type AptSource, debLine } from "./driver.js";

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
  // Without hwdb.bin (the minimize step drops it) its sources are dead weight:
  // 8.8 MiB of vendor and model names. Bookworm's udev still ships them under
  // /lib, and dpkg matches the package's own path, not the merged /usr one.
  "path-exclude=/usr/lib/udev/hwdb.d/*",
  "path-exclude=/lib/udev/hwdb.d/*",
  // The leap-second ("right/") zones: 1.9 MiB no server clock uses (NTP smears or steps instead).
  "path-exclude=/usr/share/zoneinfo/right/*",
];

/** `apt-cache madison KERNEL` at bootstrap time, kept in the image. */
export const APT_OFFERS = "/var/lib/kiln/apt-offers";

export interface RootfsRecipe {
  release: string;
  mirror: string;
  arch: string;
  packages: string[];
  /** The kernel metapackage (none for a container). */
  kernel?: string;
  keyring?: string;
  components: string[];
  /** The suites the root is built from; they stay in its sources.list. */
  sources: AptSource[];
  /** The mmdebstrap arguments, minus the output path and cache hooks. */
  args: string[];
}

/** mmdebstrap's mirror arguments: one `deb` line per suite, written as the image's sources.list. */
export function mirrorArgs(r: RootfsRecipe): string[] {
  return r.sources.map(debLine);
}
