import type { ArtifactRecord, Manifest } from "../artifact/manifest.js";
import type { DiskRecord } from "../cloud/store.js";
import type { LoadedSpec } from "../config/load.js";
import type { Spec } from "../config/schema.js";
import type { PackageInfo } from "../distro/packages.js";
import type { Plan } from "../plan/plan.js";
import type { Credential } from "../util/credentials.js";
import type { TarMember } from "../util/tar-format.js";
import type { RootSource } from "./up-to-date.js";

/** What steps find out and later steps (or the manifest) read. */
export interface BuildFacts {
  /** Set by the kernel step; the metapackage and what the suites offered, by the rootfs step. */
  kernelVersion?: string;
  kernelPackage?: Manifest["kernelPackage"];
  /** When the cached root was bootstrapped, from which suites' Release files. */
  root?: Manifest["root"];
  /** Set by minimize (or customise): the root filesystem's bytes and packages. */
  installedBytes?: number;
  packages?: PackageInfo[];
  /** The disk's layout and filesystem UUIDs (or, customised, where it came from), for the manifest. */
  disk?: Record<string, unknown>;
  /** Customise: the imported disk the build started from, and whether it was grown. */
  base?: DiskRecord;
  grown?: boolean;
  /** The root tree's listing file in the output (for kiln diff). */
  contents?: string;
  /** disk.layout raid1: the md array's UUID (32 hex digits), chosen before the initrd is made. */
  mirrorUuid?: string;
  /** kernel.keep_modules: needed: what the kernel step kept and dropped (for the manifest). */
  modules?: Manifest["modules"];
  /** What the build changed on the host to run another architecture's programs (binfmt_misc). */
  hostChanges?: string[];
}

/** Everything the build steps share. Each step reads what earlier ones left here. */
export interface DeferredModules {
  tar: string;
  version: string;
  /** The member name of usr/lib/modules/VERSION/kernel/ (as the tar spells it, with its "/"). */
  dir: string;
  /** The tar's members below it, and itself if the tar holds it. */
  members: Pick<TarMember, "name" | "type" | "size">[];
}

export interface BuildContext {
  loaded: LoadedSpec;
  spec: Spec;
  plan: Plan;
  /** Scratch space beside the output, removed at the end. */
  work: string;
  /** The root filesystem being built. */
  root: string;
  /** Staged output directory, renamed to `outDir` only when everything succeeded. */
  stage: string;
  outDir: string;
  refresh: boolean;
  credentials: Credential[];
  artifacts: ArtifactRecord[];
  /**
   * Artifacts' sha256 being computed while later steps run (the manifest step
   * awaits them): hashing a 400 MiB raw disk took 1.3 s of a one-file rebuild,
   * beside a qcow2 conversion that is itself CPU-bound on one core.
   */
  hashing: Promise<void>[];
  /**
   * Reads of the finished root running beside later steps (its contents
   * listing); a step that moves or changes the root awaits them first.
   */
  rootReads: Promise<void>[];
  /** What steps learn for later steps and the manifest. */
  facts: BuildFacts;
  /** Each finished step's time and note, for the manifest. */
  steps: Manifest["steps"];
  /**
   * What every id and seed the build makes (filesystem and partition UUIDs,
   * hash seeds) is derived from: the spec and the root it starts from.
   */
  seed: string;
  /** The root's lock, or the suites' dates the build was planned against (asked once). */
  source: RootSource;
  /** The cached root the build started from (its cache file's name), for caches keyed by it. */
  rootId?: string;
  /**
   * Kernel modules left in the cached root's tar when it was unpacked: the
   * kernel step unpacks only those it keeps (see modules.ts, modulesToDefer).
   */
  deferredModules?: DeferredModules;
  /** The build's key (see up-to-date.ts), recorded in the manifest. */
  buildKey?: string;
  /** SOURCE_DATE_EPOCH: no time in an artifact is later; set by the rootfs step. */
  epoch?: number;
  /** Log lines from a step (and a step's progress detail). */
  detail(text: string): void;
}
