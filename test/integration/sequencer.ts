import { basename } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

// Seconds each integration file took in a full CI run (cold caches, two at a time), longest
// first. Two files run at once, and starting the longest first keeps both
// lanes busy to the end (a file not listed here goes last).
const SECONDS: Record<string, number> = {
  update: 730,
  install: 610,
  agent: 437,
  cloud: 422,
  arm64: 404,
  iso: 354,
  raid1: 292,
  test: 264,
  containers: 183,
  netboot: 177,
  reproducible: 117,
  build: 101,
  nano: 90,
  "netboot-integrity": 78,
  fleet: 49,
  publish: 30,
  "serve-flood": 22,
  dashboard: 6,
  cli: 2,
  "fleet-postgres": 1,
};

const weight = (s: TestSpecification) =>
  SECONDS[basename(s.moduleId).replace(/\.test\.ts$/, "")] ?? 0;

export default class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    return sorted.sort((a, b) => weight(b) - weight(a));
  }
}
