import { CLOUD_OUTPUTS, CLOUDS, cloudsOf } from "../config/clouds.js";
import {
  DISK_CONVERSIONS,
  keepModulesPolicy,
  type OutputFormat,
  type Spec,
  trimmed,
} from "../config/schema.js";
import type { RootfsRecipe } from "../distro/mmdebstrap.js";
import { cacheKey } from "../util/hash.js";
import { rootfsRecipe } from "./recipe.js";

/**
 * Bump when a step's behaviour changes in a way that invalidates what it
 * cached before; the number is part of every cache key of that step.
 */
const STEP_VERSION = { rootfs: 2 } as const;

/**
 * Output steps in the order they run: everything that reads the root
 * filesystem first, the raw disk before what is made from it (ISO and the
 * qemu-img conversions), and `directory` last, because it moves the root
 * filesystem into the output instead of copying it.
 */
export const OUTPUT_ORDER = [
  "tar",
  "oci",
  "portable",
  "sysext",
  "disk",
  "iso",
  ...DISK_CONVERSIONS,
  ...CLOUD_OUTPUTS,
  "netboot",
  "directory",
] as const satisfies readonly OutputFormat[];

// Every output format has its place in the order (a compile error otherwise).
const _everyOutputOrdered: [Exclude<OutputFormat, (typeof OUTPUT_ORDER)[number]>] extends [never]
  ? true
  : never = true;
void _everyOutputOrdered;

/** Every step a plan can hold. The plan's order is the build's: nothing else spells it. */
export type StepId =
  | "base"
  | "customise"
  | "rootfs"
  | "configure"
  | "users"
  | "kernel"
  | "minimize"
  | OutputFormat
  | "manifest";

export interface PlannedStep {
  id: StepId;
  title: string;
  /** Content hash of the step's inputs; `cached` steps are skipped when it is already stored. */
  key: string;
  cached: boolean;
  /** What of the step a build takes from kiln's cache when its key is there, for --plan. */
  reuses?: string;
}

export interface Plan {
  name: string;
  /** `image:NAME` when the spec customises an imported disk (then `recipe` is not used). */
  base?: string;
  specHash: string;
  recipe: RootfsRecipe;
  steps: PlannedStep[];
}

/** The cache key of a root filesystem: its recipe, and the version of the step that makes it. */
export function rootfsKey(recipe: RootfsRecipe): string {
  return cacheKey("rootfs", STEP_VERSION.rootfs, recipe);
}

/** A spec whose outputs never boot by themselves (OCI, portable, sysext) needs no kernel, initrd or boot loader. */
export function containerOnly(spec: Spec): boolean {
  return spec.outputs.every((o) => o === "oci" || o === "portable" || o === "sysext");
}

/** Spec → ordered steps with cache keys. Pure: no I/O, no root, no network. */
export function planBuild(spec: Spec, canonicalSpec: string): Plan {
  if (spec.base) return planCustomise(spec, canonicalSpec);
  const container = containerOnly(spec);
  const recipe = rootfsRecipe(spec, { container });
  const rootKey = rootfsKey(recipe);
  const specHash = cacheKey(canonicalSpec);
  const steps: PlannedStep[] = [
    {
      id: "rootfs",
      title: `root filesystem (${spec.distribution.id} ${recipe.release}, ${recipe.packages.length} packages)`,
      key: rootKey,
      cached: true,
    },
    {
      id: "configure",
      title: "hostname, time zone, locale, network, services",
      key: cacheKey(rootKey, specHash, "configure"),
      cached: false,
    },
    // Passwords are generated anew every build, so this step is never cached.
    {
      id: "users",
      title: `users (${spec.users.length}) and files (${spec.files.length})`,
      key: cacheKey(rootKey, specHash, "users"),
      cached: false,
    },
    ...(container
      ? []
      : [
          {
            id: "kernel" as const,
            title: `kernel${keepModulesPolicy(spec) === "needed" ? " (needed modules only)" : ""} and ${spec.kernel.initrd} initrd`,
            key: cacheKey(rootKey, spec.kernel),
            cached: false,
            ...(spec.kernel.initrd === "tiny"
              ? { reuses: "the initrd made from the same root and modules" }
              : {}),
          },
        ]),
    {
      id: "minimize",
      title: `minimize (${spec.profile} profile)`,
      key: cacheKey(rootKey, spec.profile),
      cached: false,
      ...(trimmed(spec) ? { reuses: "the kernel modules compressed for the same root" } : {}),
    },
  ];
  const outputs = new Set(spec.outputs);
  // VM formats are converted from the raw disk, so the disk is always made for them.
  if (DISK_CONVERSIONS.some((f) => outputs.has(f)) || outputs.has("iso") || cloudsOf(spec).length)
    outputs.add("disk");
  const raw = `${spec.name}_${spec.version}.raw`;
  const titles: Partial<Record<OutputFormat, string>> = {
    disk:
      spec.disk.layout === "raid1"
        ? `${spec.disk.mirrors} disk images (raid1 layout: the root mirrored, ${spec.disk.firmware.join("+")})`
        : `disk image (${spec.disk.layout} layout, ${spec.disk.firmware.join("+")})`,
    oci: `OCI image layout (tag ${spec.version})`,
    iso: "installer ISO (live system + unattended install; BIOS and UEFI)",
    portable: `portable service image ${raw}`,
    sysext: `system extension ${raw}`,
    ...Object.fromEntries(CLOUD_OUTPUTS.map((c) => [c, CLOUDS[c].title])),
  };
  for (const o of OUTPUT_ORDER) {
    if (!outputs.has(o)) continue;
    const title = titles[o] ?? `${o} output`;
    steps.push({ id: o, title, key: cacheKey(specHash, o), cached: false });
  }
  steps.push({
    id: "manifest",
    title: "manifest and checks",
    key: cacheKey(specHash, "manifest"),
    cached: false,
  });
  return { name: spec.name, specHash, recipe, steps };
}

/**
 * A spec with `base: image:NAME`: copy the import, customise the copy,
 * write the outputs. Nothing is cached: every run starts from the import.
 */
function planCustomise(spec: Spec, canonicalSpec: string): Plan {
  const specHash = cacheKey(canonicalSpec);
  const step = (id: StepId, title: string): PlannedStep => ({
    id,
    title,
    key: cacheKey(specHash, id),
    cached: false,
  });
  const steps = [
    step("base", `copy of ${spec.base}${spec.disk.size ? `, grown to ${spec.disk.size}` : ""}`),
    step(
      "customise",
      `customise: ${spec.packages.length} packages, ${spec.users.length} users, ${spec.files.length} files, services${spec.seed?.bake ? ", NoCloud seed" : ""}`,
    ),
    step("disk", "disk image (the customised copy)"),
  ];
  for (const f of DISK_CONVERSIONS)
    if (spec.outputs.includes(f)) steps.push(step(f, `${f} output`));
  steps.push(step("manifest", "manifest and checks"));
  return {
    name: spec.name,
    base: spec.base,
    specHash,
    recipe: rootfsRecipe(spec),
    steps,
  };
}
