import { defineConfig } from "vitest/config";
import LongestFirst from "./test/integration/sequencer.js";

// Two layers: `unit` needs neither root nor network; `integration` really
// builds and boots with long timeouts, two files at a time: a TCG boot keeps
// one core busy and this machine has two. Each file gets its own temporary
// directory and fleet database (isolate.ts), longest files first.
export default defineConfig({
  test: {
    sequence: { sequencer: LongestFirst },
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          testTimeout: 20_000,
          // GitHub's workflow parser imports its schema JSON without an import
          // attribute, which Node refuses; Vite's own transform reads it.
          server: { deps: { inline: ["@actions/workflow-parser"] } },
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          // Build dist/ first (a stale one must never pass), then count emulator retries.
          globalSetup: ["test/integration/global-build.ts", "test/integration/setup.ts"],
          setupFiles: ["test/integration/isolate.ts"],
          testTimeout: 900_000,
          hookTimeout: 1_800_000,
          fileParallelism: true,
          maxWorkers: Number(process.env.KILN_IT_WORKERS ?? 2),
          sequence: { concurrent: false },
        },
      },
    ],
  },
});
