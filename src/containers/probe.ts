import { existsSync } from "node:fs";
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import type { CheckResult } from "../check/evaluate.js";
import type { TargetReport } from "../check/junit.js";
import { readAsset } from "../util/assets.js";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { shellQuote } from "../util/shell.js";
import { runContainer } from "./run.js";
import { findImage, type ImageRef, refText } from "./store.js";

export interface ProbeOptions {
  /** A package name, or the path of a .deb. */
  pkg: string;
  images: ImageRef[];
  service?: string;
  port?: number;
  http?: string;
  /** An HTTP status ("200") or a /regex/ the body must match. */
  expect?: string;
}

export interface ProbeReport extends TargetReport {
  version?: string;
  seconds: number;
}

/**
 * For each image: a fresh container booted with systemd on a throw-away
 * overlay installs the package (from the image's apt sources, or a local
 * .deb), starts the service, waits for it and probes port and HTTP. The
 * container shares the host's network so apt can reach its mirror; probes
 * run one image at a time so their ports do not collide.
 */
export async function probe(o: ProbeOptions): Promise<ProbeReport[]> {
  for (const ref of o.images)
    if (!findImage(ref))
      throw new KilnError(
        "PROBE_NO_IMAGE",
        `Unable to find image '${refText(ref)}'${ref.arch ? ` for linux/${ref.arch}` : ""} locally`,
        {
          hint: `kiln pull ${ref.arch ? `--platform linux/${ref.arch} ` : ""}${refText(ref)}`,
        },
      );
  const deb = o.pkg.endsWith(".deb") ? resolve(o.pkg) : undefined;
  if (deb && !existsSync(deb)) throw new KilnError("PROBE_NO_DEB", `${deb} does not exist`);
  const pkgName = deb ? (await exec("dpkg-deb", ["-f", deb, "Package"])).stdout.trim() : o.pkg;
  const dir = await mkdtemp(join(tmpdir(), "kiln-probe-"));
  const drop = onCleanup(`probe scratch ${dir}`, () => rm(dir, { recursive: true, force: true }));
  try {
    const env = {
      PKG: pkgName,
      DEB: deb ? basename(deb) : "",
      UNIT: o.service ?? "",
      PORT: o.port ? String(o.port) : "",
      URL: o.http ?? "",
      EXPECT: o.expect ?? "200",
    };
    await writeFile(
      join(dir, "env"),
      Object.entries(env)
        .map(([k, v]) => `${k}=${shellQuote(v)}\n`)
        .join(""),
    );
    await writeFile(join(dir, "probe.sh"), readAsset("kiln-probe/probe.sh"));
    await writeFile(join(dir, "probes.sh"), readAsset("kiln-test/probes.sh"));
    if (deb) await copyFile(deb, join(dir, basename(deb)));
    const reports: ProbeReport[] = [];
    for (const image of o.images) reports.push(await probeOne(image, dir, o));
    return reports;
  } finally {
    drop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function probeOne(image: ImageRef, dir: string, o: ProbeOptions): Promise<ProbeReport> {
  const started = Date.now();
  let out = "";
  const code = await runContainer({
    image,
    command: ["/bin/bash", "/run/kiln-probe/probe.sh"],
    boot: true,
    rm: true,
    volumes: [`${dir}:/run/kiln-probe:ro`],
    onStdout: (b) => {
      out += b.toString("utf8");
    },
  });
  const said = new Map<string, string>();
  for (const m of out.matchAll(/^PROBE:([a-z]+)=(.*)$/gm)) said.set(m[1]!, m[2]!);
  const failure = said.get("fail");
  const results: CheckResult[] = [];
  const add = (
    kind: CheckResult["kind"],
    name: string,
    expected: string,
    actual: string | undefined,
    passed: boolean,
  ) => results.push({ kind, name, expected, actual: actual ?? "not reached", passed });
  add(
    "run",
    `install ${o.pkg}`,
    "installed",
    said.get("version") ? `version ${said.get("version")}` : failure,
    !!said.get("version"),
  );
  if (o.service)
    add(
      "unit",
      `service ${o.service}`,
      "active",
      said.get("service"),
      said.get("service") === "active",
    );
  if (o.port)
    add(
      "port",
      `port ${o.port}`,
      "listening",
      said.get("port") ?? failure,
      said.get("port") === "open",
    );
  if (o.http) {
    const ok = said.has("http") && !failure;
    add(
      "http",
      `http ${o.http}`,
      o.expect ?? "200",
      said.has("http")
        ? `HTTP ${said.get("http")}${failure && !failure.startsWith("HTTP status") ? ` (${failure})` : ""}`
        : failure,
      ok,
    );
  }
  const passed = code === 0 && said.get("ok") === "yes";
  if (!passed && results.every((r) => r.passed))
    add("run", "probe", "exit 0", failure ?? `exit ${code}`, false);
  return {
    target: `${refText(image)}${image.arch ? ` (linux/${image.arch})` : ""}`,
    ready: true,
    readySeconds: null,
    results,
    ...(said.get("version") ? { version: said.get("version")! } : {}),
    seconds: Math.round((Date.now() - started) / 100) / 10,
  };
}
