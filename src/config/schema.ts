import { z } from "zod";
import { distroIds, knownReleases } from "../distro/index.js";

/**
 * The spec, defined once: validation, defaults, the exported JSON Schema and
 * editor help all come from this table. Every object is strict so a typo is
 * an error with a suggestion, never a silently ignored key.
 */

/** The releases each registered distribution driver knows, for the schema's help text. */
function releasesText(): string {
  return `a release of the distribution: ${distroIds()
    .map((d) => `${d}: ${knownReleases(d).join(", ")}`)
    .join("; ")}`;
}

const size = z
  .string()
  .regex(/^\d+(\.\d+)?\s*[KMGT]i?B?$/i, "expected a size such as 512M or 2G")
  .describe("a size with a unit: K, M, G or T (powers of 1024)");

const unitName = z.string().regex(/^[A-Za-z0-9@._:\\-]+$/, "not a systemd unit name");

const passwordSetting = z
  .union([
    z
      .literal("generate")
      .describe("a new random password each build (plaintext only in DIR/credentials)"),
    z
      .string()
      .regex(/^\$(6|5|y|2[aby])\$/, 'expected "generate" or a crypt(3) hash such as $6$...'),
  ])
  .describe('"generate", or a crypt(3) hash (e.g. from `openssl passwd -6`)');

const user = z
  .strictObject({
    name: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, "not a valid user name"),
    password: passwordSetting.optional().describe("omit to lock password login"),
    groups: z.array(z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/)).default([]),
    shell: z.string().default("/bin/bash"),
    uid: z.number().int().min(1000).max(60000).optional(),
    ssh_authorized_keys: z.array(z.string()).default([]),
  })
  .describe("a login account; groups that do not exist are created");

const file = z
  .strictObject({
    path: z.string().startsWith("/", "must be an absolute path inside the image"),
    content: z.string().optional().describe("inline content"),
    source: z.string().optional().describe("a file or directory, relative to the spec file"),
    mode: z
      .string()
      .regex(/^0?[0-7]{3,4}$/, "expected an octal mode such as 0644")
      .optional(),
    owner: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?$/, "expected user or user:group")
      .optional(),
  })
  .refine((f) => (f.content === undefined) !== (f.source === undefined), {
    message: "give exactly one of content or source",
  });

const iface = z.strictObject({
  match: z.string().default("en* eth*").describe("interface name globs, space separated"),
  dhcp: z.boolean().default(true),
  address: z
    .string()
    .regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, "expected CIDR such as 192.168.1.10/24")
    .optional(),
  gateway: z.string().optional(),
  dns: z.array(z.string()).default([]),
});

const check = z
  .strictObject({
    name: z.string().optional(),
    run: z.string().optional().describe("a shell command run inside the booted system"),
    exit: z.number().int().optional().describe("expected exit status of run (default 0)"),
    stdout: z.string().optional().describe("regular expression stdout must match"),
    stderr: z.string().optional().describe("regular expression stderr must match"),
    unit: unitName.optional().describe("a unit that must be active"),
    file: z.string().optional().describe("a path that must exist"),
    port: z.number().int().min(1).max(65535).optional().describe("a TCP port that must listen"),
    http: z.string().url().optional().describe("a URL fetched from inside the guest"),
    status: z.number().int().optional().describe("expected HTTP status (default 200)"),
    on: z
      .array(z.enum(["nspawn", "uefi", "bios", "netboot", "iso"]))
      .optional()
      .describe("targets this check runs on"),
  })
  .refine(
    (c) => [c.run, c.unit, c.file, c.port, c.http].filter((v) => v !== undefined).length === 1,
    {
      message: "a check needs exactly one of run, unit, file, port, http",
    },
  );

export const OUTPUT_FORMATS = [
  "directory",
  "tar",
  "disk",
  "qcow2",
  "vmdk",
  "vdi",
  "vhdx",
  "gce",
  "azure",
  "aws",
  "iso",
  "netboot",
  "oci",
  "portable",
  "sysext",
] as const;

export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** Outputs qemu-img converts from the raw disk, in build order. */
export const DISK_CONVERSIONS = ["qcow2", "vmdk", "vdi", "vhdx"] as const;
export type DiskConversion = (typeof DISK_CONVERSIONS)[number];

export const specSchema = z
  .strictObject({
    $schema: z.string().optional(),
    name: z
      .string()
      .regex(
        /^[a-z0-9][a-z0-9.-]{0,62}$/,
        "use lower-case letters, digits, '.' and '-' (at most 63)",
      )
      .describe("names the artifacts (NAME.raw, NAME_VERSION.raw: so no '_')"),
    extends: z
      .union([z.string(), z.array(z.string())])
      .optional()
      .describe("base spec(s), relative to this file; lists merge by key, scalars override"),
    version: z
      .string()
      .regex(
        /^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$/,
        "use letters, digits, '.' and '-' (it becomes part of file names: NAME_VERSION.raw)",
      )
      .default("0.1.0"),
    base: z
      .string()
      .regex(/^image:[a-z0-9][a-z0-9._-]*$/, "expected image:NAME (a disk stored by `kiln import`)")
      .optional()
      .describe(
        "customise an imported disk instead of building from scratch: packages, users, files, services and seed are applied to a copy",
      ),
    distribution: z
      .strictObject({
        id: z.enum(distroIds()).default("debian"),
        release: z
          .string()
          .regex(/^[a-z][a-z0-9-]*$/, "not a release name")
          .default("bookworm")
          .describe(releasesText()),
        mirror: z.string().url().optional().describe("default: the distribution's main mirror"),
        components: z.array(z.string()).optional(),
        keyring: z.string().optional().describe("keyring file trusted for the mirror"),
        updates: z
          .boolean()
          .default(true)
          .describe("build from and keep the release's -updates suite"),
        security: z
          .boolean()
          .default(true)
          .describe("build from and keep the release's -security suite"),
        security_mirror: z
          .string()
          .url()
          .optional()
          .describe("default: the distribution's security archive"),
      })
      .prefault({}),
    architecture: z.enum(["amd64", "arm64"]).default("amd64"),
    packages: z
      .array(z.string().regex(/^[a-z0-9][a-z0-9+.-]+(=[^\s]+)?$/, "not a package name"))
      .default([]),
    dbus: z
      .boolean()
      .default(true)
      .describe(
        "a system bus (systemctl as a user, hostnamectl, networkctl, busctl); false leaves it out",
      ),
    profile: z
      .enum(["minimal", "nano", "standard"])
      .default("minimal")
      .describe(
        "minimal: no docs, man pages, locales, info, recommends, apt lists or caches; nano: minimal, then the package manager (apt, dpkg, debconf, perl) and the libraries only it used are removed (the package list stays in /usr/lib/kiln/packages; no apt-get install on the device); standard: all of Debian's files",
      ),
    hostname: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i, "not a valid host name")
      .default("kiln"),
    timezone: z.string().default("Etc/UTC"),
    locale: z.string().default("C.UTF-8"),
    root: z
      .strictObject({
        password: passwordSetting.optional().describe("omit to keep root locked"),
        ssh_authorized_keys: z.array(z.string()).default([]),
      })
      .prefault({}),
    users: z.array(user).default([]),
    files: z.array(file).default([]),
    services: z
      .strictObject({
        enable: z.array(unitName).default([]),
        disable: z.array(unitName).default([]),
        mask: z.array(unitName).default([]),
      })
      .prefault({}),
    network: z
      .strictObject({
        interfaces: z.array(iface).prefault([{}]),
      })
      .prefault({}),
    kernel: z
      .strictObject({
        package: z.string().optional().describe("default: the distribution's cloud/virtual kernel"),
        cmdline: z.string().default(""),
        initrd: z
          .enum(["tiny", "initramfs-tools"])
          .default("tiny")
          .describe(
            "tiny: a few-KB initrd that loads only `modules`; initramfs-tools: Debian's full one",
          ),
        modules: z
          .array(z.string())
          .default(["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci"])
          .describe("modules the tiny initrd loads to find the root disk"),
        keep_modules: z
          .enum(["needed", "all"])
          .optional()
          .describe(
            "needed: only the modules of virtual and cloud hardware, the image's filesystems and layout, `modules` and `extra_modules` (with their dependencies) stay in /usr/lib/modules; all: every module the kernel package ships (default: needed with profile minimal, all otherwise)",
          ),
        extra_modules: z
          .array(z.string().regex(/^[A-Za-z0-9_-]+$/, "a module name"))
          .default([])
          .describe("modules (and their dependencies) kept besides the needed ones"),
      })
      .prefault({}),
    console: z
      .strictObject({
        serial: z
          .string()
          .default("ttyS0,115200")
          .describe(
            '"" for none; arm64 default: ttyAMA0,115200 (the PL011 of QEMU\'s virt machine)',
          ),
        quiet: z
          .boolean()
          .default(true)
          .describe(
            "`quiet` on the kernel command line: the kernel and systemd print only warnings and errors on the console (the journal keeps everything); under emulation each console line costs boot time",
          ),
      })
      .prefault({}),
    disk: z
      .strictObject({
        layout: z
          .enum(["single", "ab", "raid1"])
          .default("single")
          .describe("ab: root A + root B + data; raid1: the root mirrored on two disks (md RAID1)"),
        size: size
          .optional()
          .describe("whole disk; default: fits the root filesystem(s) with headroom"),
        esp_size: size.default("64M"),
        data_size: size.default("256M").describe("data partition of the ab layout"),
        mirrors: z
          .number()
          .int()
          .min(2)
          .max(4)
          .default(2)
          .describe("disks of the raid1 layout: one image each, each bootable"),
        firmware: z
          .array(z.enum(["uefi", "bios"]))
          .min(1)
          .default(["uefi", "bios"])
          .describe("arm64: uefi only (its default)"),
        menu_timeout: z
          .number()
          .int()
          .min(0)
          .max(300)
          .default(0)
          .describe(
            "seconds GRUB shows its menu; 0: boot the chosen slot at once (the menu follows only if it cannot boot)",
          ),
      })
      .prefault({}),
    outputs: z.array(z.enum(OUTPUT_FORMATS)).min(1).default(["disk", "qcow2"]),
    limits: z
      .strictObject({
        installed_size: size.optional().describe("fail the build if the root filesystem is larger"),
        compressed_size: size.optional().describe("fail the build if the qcow2 or tar is larger"),
      })
      .prefault({}),
    agent: z
      .strictObject({
        url: z
          .string()
          .url()
          .regex(/^https?:\/\/[^\s'"`$\\]+$/, "an http:// or https:// URL without quotes or spaces")
          .describe("where kiln-agent asks for this machine's add-ons (kiln serve's address)"),
        interval: z
          .number()
          .int()
          .min(5)
          .default(60)
          .describe("seconds between asks; also the longest back-off while the server is away"),
        keyring: z
          .string()
          .optional()
          .describe(
            "public key the agent verifies the signed add-on list with (relative to the spec); `kiln keys addons` makes one",
          ),
        profiles: z
          .array(z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, "a profile name"))
          .optional()
          .describe(
            "the inventory profiles this image may be assigned; others are refused (default: any in the signed list)",
          ),
        insecure_unsigned: z
          .boolean()
          .default(false)
          .describe(
            "labs only: no keyring, the agent attaches whatever the network hands it (logged as a warning)",
          ),
      })
      .optional()
      .describe(
        "kiln-agent: attach the portable services and system extensions the inventory assigns",
      ),
    update: z
      .strictObject({
        compatible: z
          .string()
          .regex(/^[A-Za-z0-9][A-Za-z0-9._ -]*$/, "letters, digits, '.', '_', '-' and spaces")
          .optional()
          .describe("what RAUC matches bundles against; default: the spec's name"),
        tries: z
          .number()
          .int()
          .min(1)
          .max(9)
          .default(3)
          .describe("boots a slot gets on trial before GRUB falls back to the other one"),
        keyring: z
          .string()
          .optional()
          .describe(
            "CA certificate bundles must chain to (relative to the spec); `kiln keys init` makes one",
          ),
        health: z
          .array(check)
          .default([])
          .describe(
            "checks that must pass before the booted slot is marked good (patterns are grep -E)",
          ),
      })
      .optional()
      .describe("A/B updates with RAUC (needs disk.layout: ab)"),
    seed: z
      .strictObject({
        hostname: z
          .string()
          .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i, "not a valid host name")
          .optional()
          .describe("default: the spec's hostname"),
        users: z
          .array(user)
          .optional()
          .describe("accounts the seed creates at first boot; default: the spec's users"),
        runcmd: z
          .array(z.string())
          .default([])
          .describe("shell commands run once at the end of first boot"),
        bake: z
          .boolean()
          .default(false)
          .describe(
            "customised images: also write the NoCloud seed into /var/lib/cloud/seed/nocloud",
          ),
        disk: z
          .string()
          .default("largest")
          .describe("autoinstall: the target disk (a /dev path, or largest)"),
      })
      .optional()
      .describe("first-boot configuration for `kiln seed` (NoCloud, autoinstall, Ignition)"),
    tests: z.array(check).default([]),
  })
  .describe("A kiln spec: one declarative description of a minimal Linux system.");

/**
 * The defaults that depend on the architecture, filled in before the schema
 * gives its own: an arm64 machine has no BIOS, and its first serial port is
 * a PL011 (ttyAMA0), not a 16550 (ttyS0).
 */
export function archDefaults(input: unknown): unknown {
  if (!isRecord(input) || input.architecture !== "arm64") return input;
  const console = isRecord(input.console) ? input.console : {};
  const disk = isRecord(input.disk) ? input.disk : {};
  return {
    ...input,
    console: { serial: "ttyAMA0,115200", ...console },
    disk: { firmware: ["uefi"], ...disk },
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export type Spec = z.output<typeof specSchema>;

/** The minimal profile's trimming applies (minimal, and nano which goes further). */
export function trimmed(spec: Pick<Spec, "profile">): boolean {
  return spec.profile !== "standard";
}

/** `kernel.keep_modules` as the build applies it: needed by default with a trimmed profile. */
export function keepModulesPolicy(spec: Pick<Spec, "kernel" | "profile">): "needed" | "all" {
  return spec.kernel.keep_modules ?? (trimmed(spec) ? "needed" : "all");
}
export type SpecInput = z.input<typeof specSchema>;
export type Check = Spec["tests"][number];
export type User = Spec["users"][number];
export type FileEntry = Spec["files"][number];

/** Parse "512M"/"2G" into bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT])/i.exec(text);
  if (!m) throw new Error(`bad size ${text}`);
  const pow = "KMGT".indexOf(m[2]!.toUpperCase()) + 1;
  return Math.round(Number(m[1]) * 1024 ** pow);
}
