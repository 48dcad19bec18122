import { writeFile } from "node:fs/promises";
import type { Command } from "commander";
import { junitXml } from "../check/junit.js";
import { probe } from "../containers/probe.js";
import { parsePlatform, parseRef } from "../containers/store.js";
import { KilnError } from "../util/errors.js";
import { log } from "../util/log.js";
import { printJson, printTable } from "./output.js";

interface ProbeFlags {
  on: string;
  service?: string;
  port?: string;
  http?: string;
  expect?: string;
  junit?: string;
  json?: boolean;
  platform?: string;
}

export function registerProbe(program: Command): void {
  program
    .command("probe")
    .argument("<package>", "a package name, or a .deb file")
    .requiredOption(
      "--on <images>",
      "stored images, comma separated (debian:bookworm,debian:trixie)",
    )
    .option("--service <unit>", "a unit that must be active after the install")
    .option("--port <n>", "a TCP port that must listen")
    .option("--http <url>", "a URL fetched inside the container")
    .option("--expect <status|/regex/>", "HTTP status, or a pattern the body must match", "200")
    .option(
      "--platform <os/arch>",
      "linux/arm64 or linux/amd64: the stored images of that architecture (see kiln pull --platform)",
    )
    .option("--junit <file>", "write a JUnit XML report")
    .option("--json", "print the reports as JSON")
    .description("install a package in a fresh booted container of each image, start and probe it")
    .action(async (pkg: string, o: ProbeFlags) => {
      const port = o.port === undefined ? undefined : Number(o.port);
      if (port !== undefined && !(port > 0 && port < 65536))
        throw new KilnError("USAGE", `--port ${o.port} is not a port`, { exitCode: 2 });
      const arch = parsePlatform(o.platform);
      const images = o.on
        .split(",")
        .map((s) => ({ ...parseRef(s.trim()), ...(arch ? { arch } : {}) }));
      const reports = await probe({
        pkg,
        images,
        ...(o.service ? { service: o.service } : {}),
        ...(port ? { port } : {}),
        ...(o.http ? { http: o.http, expect: o.expect ?? "200" } : {}),
      });
      if (o.junit) await writeFile(o.junit, junitXml(`probe ${pkg}`, reports));
      const failed = reports.some((r) => r.results.some((c) => !c.passed));
      if (o.json) printJson({ ok: !failed, package: pkg, images: reports });
      else {
        const rows = [["IMAGE", "VERSION", "CHECK", "RESULT", "TIME"]];
        for (const r of reports)
          for (const c of r.results)
            rows.push([
              r.target,
              r.version ?? "-",
              c.name,
              c.passed ? "ok" : `FAILED: expected ${c.expected}, got ${c.actual}`,
              `${r.seconds}s`,
            ]);
        printTable(rows);
        if (failed)
          log.warn(
            `probe of ${pkg} failed on ${reports
              .filter((r) => r.results.some((c) => !c.passed))
              .map((r) => r.target)
              .join(", ")}`,
          );
      }
      if (failed) process.exitCode = 1;
    });
}
