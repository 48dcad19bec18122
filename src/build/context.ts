import type { Plan } from "../plan/plan.js";
import type { LoadedSpec } from "../spec/load.js";
import type { Spec } from "../spec/schema.js";

export interface Credential {
  user: string;
  password: string;
}

export interface ArtifactRecord {
  format: string;
  path: string;
  size: number;
  sha256: string;
}

/** Everything the build steps share. Each step reads what earlier ones left here. */
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
  /** Filled by steps: kernel version, filesystem UUIDs, sizes. */
  facts: Record<string, unknown>;
  /** Log lines from a step (and a step's progress detail). */
  detail(text: string): void;
}
