import { join } from "node:path";
import type { Command } from "commander";
import { readManifest } from "../artifact/manifest.js";
import { pushBuild } from "../publish/push.js";
import { accessFrom, parseRegistryRef } from "../publish/registry.js";
import { requireTools } from "../util/doctor.js";
import { KilnError } from "../util/errors.js";
import { printJson } from "./output.js";

interface PushFlags {
  insecure?: boolean;
  tlsVerify: string;
  authfile?: string;
  signKey?: string;
  disk?: string;
  json?: boolean;
}

export function registerPush(program: Command): void {
  program
    .command("push")
    .argument("<dir>", "a build output directory (with manifest.json)")
    .argument(
      "<ref>",
      "HOST[:PORT]/REPO[:TAG] (default tag: the spec's version); docker:// optional",
    )
    .option("--insecure", "a plain-HTTP registry, or one without a verifiable certificate")
    .option("--tls-verify <bool>", "require HTTPS and a verified certificate", "true")
    .option(
      "--authfile <file>",
      "skopeo/docker auth file (else KILN_REGISTRY_CREDS=USER:PASSWORD from the environment)",
    )
    .option("--sign-key <pem>", "write SHA256SUMS of the disk, sign it (EC key, PEM) and push both")
    .option(
      "--disk <format>",
      "which disk output to push: qcow2 (default when built) or disk (raw)",
    )
    .option("--json", "print {ref, digest, layers, disk, sums} as JSON")
    .description(
      "push a build's disk to an OCI registry as a KubeVirt containerDisk (plus its signed SHA256SUMS)",
    )
    .action(async (dir: string, refText: string, o: PushFlags) => {
      const ref = parseRegistryRef(refText);
      await requireTools(["skopeo", ...(o.signKey ? ["openssl"] : [])]);
      const m = await readManifest(dir);
      const want = o.disk ?? (m.artifacts.some((a) => a.format === "qcow2") ? "qcow2" : "disk");
      if (want !== "qcow2" && want !== "disk")
        throw new KilnError("USAGE", `--disk takes qcow2 or disk, not ${want}`);
      const a = m.artifacts.find((x) => x.format === want);
      if (!a)
        throw new KilnError(
          "PUSH_NO_DISK",
          `${dir} has no ${want === "disk" ? "raw disk" : "qcow2"} output (it has ${m.artifacts.map((x) => x.format).join(", ") || "none"})`,
          { hint: "add qcow2 (or disk) to the spec's outputs and build again" },
        );
      const r = await pushBuild(
        {
          dir,
          name: m.name,
          version: m.version,
          kiln: m.kiln,
          specHash: m.specHash,
          builtAt: m.builtAt,
          architecture: m.distribution.architecture,
          distribution: `${m.distribution.id} ${m.distribution.release}`,
          disk: {
            path: join(dir, a.path),
            size: a.size,
            sha256: a.sha256,
            format: want === "disk" ? "raw" : "qcow2",
          },
        },
        ref,
        {
          access: accessFrom(o),
          ...(o.signKey ? { signKey: o.signKey } : {}),
        },
      );
      if (o.json) return printJson(r);
      console.log(`${r.ref}@${r.digest}`);
      console.log(`  disk/${r.disk.file} sha256 ${r.disk.sha256}`);
      if (r.sums) console.log(`  ${r.sums.signed ? "signed " : ""}SHA256SUMS: ${r.sums.ref}`);
      console.log(`KubeVirt: containerDisk: { image: ${r.ref} }; kiln: kiln import oci://${r.ref}`);
    });
}
