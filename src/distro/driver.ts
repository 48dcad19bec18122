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
