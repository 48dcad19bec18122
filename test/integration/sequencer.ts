import { basename } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

// Seconds each integration file took in a full CI run (cold caches), longest
// first. Two files run at once, and starting the longest first keeps both
// lanes busy to the end (a file not listed here goes last).
const SECONDS: Record<string, number> = {
  update: 744,
  install: 483,
  agent: 431,
  cloud: 339,
  test: 311,
  iso: 298,
  netboot: 211,
  containers: 153,
  "netboot-integrity": 84,
  build: 79,
  fleet: 47,
  "serve-flood": 22,
  dashboard: 5,
  cli: 2,
  "fleet-postgres": 2,
};

const weight = (s: TestSpecification) =>
  SECONDS[basename(s.moduleId).replace(/\.test\.ts$/, "")] ?? 0;

export default class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    return sorted.sort((a, b) => weight(b) - weight(a));
  }
}
