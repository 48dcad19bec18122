import { defineConfig } from "vitest/config";

// Two layers: `unit` needs neither root nor network; `integration` really
// builds and boots, so it runs files one at a time with long timeouts.
export default defineConfig({
  test: {
    projects: [
      {
        test: { name: "unit", include: ["test/unit/**/*.test.ts"], testTimeout: 20_000 },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          // Build dist/ first (a stale one must never pass), then count emulator retries.
          globalSetup: ["test/integration/global-build.ts", "test/integration/setup.ts"],
          testTimeout: 900_000,
          hookTimeout: 1_800_000,
          fileParallelism: false,
          sequence: { concurrent: false },
        },
      },
    ],
  },
});
