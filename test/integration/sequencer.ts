import { basename } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

// Seconds each integration file took in a full CI run (cold caches, two at a time), longest
// first. Two files run at once, and starting the longest first keeps both
// lanes busy to the end (a file not listed here goes last).
const SECONDS: Record<string, number> = {
  update: 835,
  install: 581,
  // Cold: the arm64 bootstrap through qemu-user (~180 s), the arm64 container's (~110 s), one
  // UEFI boot under qemu-system-aarch64; 176 s with warm caches.
  arm64: 450,
  cloud: 500,
  agent: 400,
  iso: 353,
  raid1: 345,
  test: 234,
  netboot: 213,
  containers: 184,
  reproducible: 300,
  build: 113,
  "netboot-integrity": 79,
  publish: 50,
  fleet: 49,
  "serve-flood": 42,
  dashboard: 15,
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
