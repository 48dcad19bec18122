import { knownReleases } from "../distro/index.js";
import { isPackageManagerPart } from "../distro/prune.js";
import { DISK_CONVERSIONS, type Spec } from "./schema.js";

/** One problem a rule found: where in the spec (a key path) and what. */
export interface Finding {
  rule: string;
  path: (string | number)[];
  message: string;
}

/**
 * A rule across fields that the schema's per-field types cannot say. An
 * error stops the load; a warning is printed (with file:line:col) and the
 * build goes on.
 */
interface Rule {
  name: string;
  level: "error" | "warning";
  check(spec: Spec): Omit<Finding, "rule">[];
}

/** Outputs kiln does not make for arm64. */
const ARM64_UNSUPPORTED = new Set<string>(["iso"]);

const isDiskFormat = (o: string) =>
  o === "disk" || (DISK_CONVERSIONS as readonly string[]).includes(o);

/** Outputs made from exactly one disk: a cloud image, or the ISO that installs one disk. */
const SINGLE_DISK = new Set<string>(["gce", "azure", "aws", "iso"]);

export const RULES: readonly Rule[] = [
  {
    name: "arm64-uefi-only",
    level: "error",
    check: (s) =>
      s.architecture === "arm64" && s.disk.firmware.includes("bios")
        ? [
            {
              path: ["disk", "firmware"],
              message: "arm64 machines boot through UEFI only: set disk.firmware: [uefi]",
            },
          ]
        : [],
  },
  {
    name: "arm64-outputs",
    level: "error",
    check: (s) => {
      const odd =
        s.architecture === "arm64" ? s.outputs.filter((o) => ARM64_UNSUPPORTED.has(o)) : [];
      return odd.length
        ? [
            {
              path: ["outputs"],
              message: `kiln makes no arm64 ${odd.join(", ")} yet (its ISO is a BIOS + x86-64 UEFI one)`,
            },
          ]
        : [];
    },
  },
  {
    name: "update-needs-ab",
    level: "error",
    check: (s) =>
      s.update && s.disk.layout !== "ab"
        ? [{ path: ["update"], message: "A/B updates need disk.layout: ab" }]
        : [],
  },
  {
    name: "one-addon-kind",
    level: "error",
    check: (s) =>
      s.outputs.includes("portable") && s.outputs.includes("sysext")
        ? [
            {
              path: ["outputs"],
              message:
                "a spec makes a portable service or a system extension, not both (one spec each)",
            },
          ]
        : [],
  },
  {
    name: "customised-import-outputs",
    level: "error",
    check: (s) => {
      const odd = s.base ? s.outputs.filter((o) => !isDiskFormat(o)) : [];
      return odd.length
        ? [
            {
              path: ["outputs"],
              message: `a customised import (base: ${s.base}) has disk outputs only (disk, qcow2, vmdk, vdi, vhdx), not ${odd.join(", ")}`,
            },
          ]
        : [];
    },
  },
  {
    name: "nano-own-root",
    level: "error",
    check: (s) =>
      s.profile === "nano" && s.base
        ? [
            {
              path: ["profile"],
              message:
                "profile nano removes the package manager from a root kiln bootstrapped; a customised import keeps its own (use minimal)",
            },
          ]
        : [],
  },
  {
    name: "nano-no-package-manager",
    level: "error",
    check: (s) =>
      s.profile === "nano"
        ? s.packages.flatMap((p, i) =>
            isPackageManagerPart(p)
              ? [
                  {
                    path: ["packages", i],
                    message: `profile nano removes the package manager, and ${p} is part of it (use profile: minimal to keep it)`,
                  },
                ]
              : [],
          )
        : [],
  },
  {
    name: "customised-import-layout",
    level: "error",
    check: (s) =>
      s.base && s.disk.layout !== "single"
        ? [
            {
              path: ["disk", "layout"],
              message:
                "a customised import keeps the partitions it came with: leave disk.layout out",
            },
          ]
        : [],
  },
  {
    name: "raid1-needs-initramfs-tools",
    level: "error",
    check: (s) =>
      s.disk.layout === "raid1" && s.kernel.initrd !== "initramfs-tools"
        ? [
            {
              path: ["kernel", "initrd"],
              message:
                "disk.layout: raid1 needs kernel.initrd: initramfs-tools: the tiny initrd cannot assemble the md array the root is on",
            },
          ]
        : [],
  },
  {
    name: "raid1-outputs",
    level: "error",
    check: (s) => {
      const single = s.disk.layout === "raid1" ? s.outputs.filter((o) => SINGLE_DISK.has(o)) : [];
      return single.length
        ? [
            {
              path: ["outputs"],
              message: `disk.layout: raid1 writes one image per disk; ${single.join(", ")} take a single disk (use disk or qcow2, vmdk, vdi, vhdx)`,
            },
          ]
        : [];
    },
  },
  {
    name: "agent-needs-keyring",
    level: "error",
    check: (s) =>
      s.agent && !s.agent.keyring && !s.agent.insecure_unsigned
        ? [
            {
              path: ["agent"],
              message:
                "kiln-agent needs agent.keyring, the public key add-on lists are signed with: make one with `kiln keys addons keys` and set agent.keyring: keys/addons.pub.pem (labs only: agent.insecure_unsigned: true)",
            },
          ]
        : [],
  },
  {
    name: "release-known",
    level: "warning",
    check: (s) =>
      knownReleases(s.distribution.id).includes(s.distribution.release)
        ? []
        : [
            {
              path: ["distribution", "release"],
              message: `kiln does not know ${s.distribution.id} release ${JSON.stringify(s.distribution.release)} (it knows ${knownReleases(s.distribution.id).join(", ")}); mmdebstrap will try it`,
            },
          ],
  },
  {
    name: "tests-need-a-console",
    level: "warning",
    check: (s) =>
      s.tests.length && s.console.serial === "" && !s.outputs.every((o) => o === "directory")
        ? [
            {
              path: ["console", "serial"],
              message:
                "kiln test reads results from the serial console: with console.serial empty, only nspawn can run the tests",
            },
          ]
        : [],
  },
];

/** Run every rule over a parsed spec: the errors that stop it and the warnings to show. */
export function checkRules(spec: Spec): { errors: Finding[]; warnings: Finding[] } {
  const errors: Finding[] = [];
  const warnings: Finding[] = [];
  for (const r of RULES) {
    for (const f of r.check(spec))
      (r.level === "error" ? errors : warnings).push({ rule: r.name, ...f });
  }
  return { errors, warnings };
}
