import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Spec } from "../config/schema.js";
import type { StepId } from "../plan/plan.js";
import { KilnError } from "../util/errors.js";

/** One file a build wrote, as manifest.json records it. */
export interface ArtifactRecord {
  format: string;
  path: string;
  size: number;
  sha256: string;
  /** Which disk of a mirrored root (disk.layout: raid1) this image is, from 1; absent for one disk. */
  disk?: number;
}

/** What `kiln build` writes to DIR/manifest.json: the one description of a build's outputs. */
export interface Manifest {
  kiln: string;
  name: string;
  version: string;
  specHash: string;
  distribution: { id: string; release: string; architecture: string };
  kernel: string | undefined;
  /** The kernel metapackage, its version, and what each suite offered when the root was made. */
  kernelPackage?: { name: string; version: string; offered: { version: string; suite: string }[] };
  /**
   * kernel.keep_modules: needed: the modules kept (with their dependencies),
   * how many were deleted and their bytes, and where the image lists them.
   */
  modules?: {
    policy: "needed";
    kept: string[];
    dropped: number;
    droppedBytes: number;
    list: string;
  };
  /** When the root filesystem was bootstrapped, and the Release dates of the suites it came from. */
  root?: {
    bootstrappedAt: string;
    suites: unknown;
    /** SPEC.lock the root was installed from. */
    lock?: { file: string; hash: string; packages: number };
  };
  /**
   * What two builds of this spec and root share: SOURCE_DATE_EPOCH, the seed
   * ids derive from, and what still differs by design (generated passwords).
   */
  reproducible?: { sourceDateEpoch: number; seed: string; differs: string[] };
  /** What the build follows from (kiln's code, spec, root): an equal key means nothing to redo. */
  buildKey?: string;
  /** The root tree's listing (CONTENTS_FILE): what `kiln diff` compares file by file. */
  contents?: string;
  packages: { name: string; version: string }[];
  sizes: { installed: number };
  artifacts: ArtifactRecord[];
  disk?: unknown;
  steps: { id: StepId; seconds: number; note?: string }[];
  /** What the build changed on the host (e.g. registered qemu-user-static for arm64). */
  hostChanges?: string[];
  /** The spec's checks, so `kiln test DIR` can run them without the spec. */
  tests: Spec["tests"];
  builtAt: string;
}

export const manifestPath = (dir: string) => join(dir, "manifest.json");

/** The manifest of a build output directory; a clear error when DIR is not one. */
export async function readManifest(
  dir: string,
  o: { hint?: string; exitCode?: number } = {},
): Promise<Manifest> {
  const mf = manifestPath(dir);
  if (!existsSync(mf))
    throw new KilnError("NO_MANIFEST", `${dir} has no manifest.json`, {
      hint: o.hint ?? "point at the output directory of `kiln build`",
      ...(o.exitCode !== undefined ? { exitCode: o.exitCode } : {}),
    });
  return JSON.parse(await readFile(mf, "utf8")) as Manifest;
}
