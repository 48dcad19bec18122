import type { ArtifactRecord } from "../artifact/manifest.js";
import type { Plan, StepId } from "../plan/plan.js";
import type { LoadedSpec } from "../spec/load.js";
import type { Spec } from "../spec/schema.js";
import type { Credential } from "../util/credentials.js";

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
  durations: Partial<Record<StepId, number>>;
  /** Filled by steps: kernel version, filesystem UUIDs, sizes. */
  facts: Record<string, unknown>;
  /** Log lines from a step (and a step's progress detail). */
  detail(text: string): void;
}
