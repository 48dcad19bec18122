/** One line of an apt sources list: `deb URI SUITE COMPONENTS...`. */
export interface AptSource {
  uri: string;
  suite: string;
  components: string[];
}

/** What a spec says about the suites beside the release itself. */
export interface SuiteChoice {
  release: string;
  arch: string;
  mirror: string;
  components: string[];
  updates: boolean;
  security: boolean;
  securityMirror?: string;
}

/**
 * What kiln needs to know about a distribution family to bootstrap it with
 * mmdebstrap. Drivers register themselves; adding a family is one file.
 */
export interface DistroDriver {
  id: string;
  releases: readonly string[];
  defaultMirror(arch: string): string;
  components: readonly string[];
  /** Keyring trusted for the default mirror (a path on the host), if not the host's default. */
  keyring?: string;
  /** Kernel metapackage for VMs and small machines. */
  defaultKernel(arch: string): string;
  /** Packages every bootable image needs beyond the minimal base. */
  bootPackages: readonly string[];
  /** The system bus a bootable image gets unless the spec opts out (`dbus: false`). */
  busPackages: readonly string[];
  /** Packages that make a group mean what an admin expects (group sudo does nothing without sudo). */
  groupPackages: Readonly<Record<string, string>>;
  /** Groups that grant nothing on this family, with why: the build warns. */
  inertGroups: Readonly<Record<string, string>>;
  /** The apt sources the image is built from and keeps: the release, its updates and security suites. */
  sources(c: SuiteChoice): AptSource[];
}

const drivers = new Map<string, DistroDriver>();

export function registerDistro(d: DistroDriver): void {
  drivers.set(d.id, d);
}

export function distroDriver(id: string): DistroDriver {
  const d = drivers.get(id);
  if (!d) throw new Error(`no driver for distribution ${id}`);
  return d;
}

/** Registered distribution ids (the spec's distribution.id enum), first registered first. */
export function distroIds(): [string, ...string[]] {
  const ids = [...drivers.keys()];
  if (!ids.length) throw new Error("no distribution drivers registered");
  return ids as [string, ...string[]];
}

export function knownReleases(id: string): readonly string[] {
  return drivers.get(id)?.releases ?? [];
}

export function knownDistro(id: string): boolean {
  return drivers.has(id);
}

/** The `deb` line mmdebstrap takes as a mirror and writes to the image's sources.list. */
export function debLine(s: AptSource): string {
  return `deb ${s.uri} ${s.suite} ${s.components.join(" ")}`;
}
