/** A position in a source file, 1-based as editors show it. */
export interface SourceLocation {
  file: string;
  line: number;
  column: number;
}

/**
 * Every error code kiln can give, with the exit status it ends the process
 * with and what it means. Codes are stable: scripts (and `--json` readers)
 * match on them; messages are for people and may change.
 */
export const ERROR_CODES = {
  USAGE: {
    exit: 2,
    meaning: "a command line kiln cannot act on (unknown option value, missing argument)",
  },
  INTERNAL: { exit: 70, meaning: "a bug in kiln itself; printed with its stack" },
  SPEC_INVALID: {
    exit: 1,
    meaning:
      "the spec (or an inventory) breaks the schema or a rule; each problem has file:line:col",
  },
  SPEC_NOT_FOUND: { exit: 1, meaning: "a spec, an extended spec or an inventory cannot be read" },
  SPEC_EXTENDS_CYCLE: { exit: 1, meaning: "specs extend each other in a circle" },
  SPEC_TIMEZONE: { exit: 1, meaning: "the spec's time zone is not in the image's tzdata" },
  SPEC_FILE_SOURCE: { exit: 1, meaning: "a files: source does not exist" },
  PROFILE_NANO: {
    exit: 1,
    meaning:
      "the nano profile cannot drop the package manager: a kept package needs perl, or a program's library would be gone",
  },
  SPEC_KERNEL_MODULE: { exit: 1, meaning: "a kernel.extra_modules name the kernel does not have" },
  TOOL_MISSING: {
    exit: 1,
    meaning: "a host program kiln needs is not installed (kiln doctor --install)",
  },
  EXEC_FAILED: {
    exit: 1,
    meaning: "a host program kiln ran failed; the message names it and ends with its stderr",
  },
  EXEC_SPAWN: { exit: 1, meaning: "a host program could not be started at all" },
  DOCTOR_NOT_ROOT: { exit: 1, meaning: "installing host packages needs root" },
  INIT_EXISTS: { exit: 1, meaning: "kiln init would overwrite a file" },
  NO_MANIFEST: { exit: 1, meaning: "a directory is not a kiln build output (no manifest.json)" },
  LIMIT_INSTALLED: { exit: 1, meaning: "the root filesystem is over limits.installed_size" },
  LIMIT_COMPRESSED: { exit: 1, meaning: "a qcow2 or tar output is over limits.compressed_size" },
  BUILD_SUDO_IDS: { exit: 1, meaning: "SUDO_UID or SUDO_GID is set but not a number" },
  MIRROR_RELEASE: {
    exit: 1,
    meaning: "a suite's Release file is missing, for another suite, or undated",
  },
  BUILD_CLOUD_DRIVER: {
    exit: 1,
    meaning: "the kernel lacks a driver a cloud output's machines need",
  },
  LOCK_INVALID: {
    exit: 1,
    meaning: "a SPEC.lock file is not valid JSON or breaks the lock schema",
  },
  LOCK_STALE: {
    exit: 1,
    meaning: "the spec asks for packages, sources or a release its lock does not describe",
  },
  LOCK_VERSION_GONE: {
    exit: 1,
    meaning: "a locked package version is neither in kiln's cache nor on the mirror",
  },
  LOCK_HASH_MISMATCH: { exit: 1, meaning: "a .deb's sha256 is not the one the lock names" },
  LOCK_DRIFT: { exit: 1, meaning: "the root built from a lock holds other packages than it locks" },
  LOCK_EXISTS: { exit: 1, meaning: "kiln lock would replace a lock without --update" },
  LOCK_MIRROR: { exit: 1, meaning: "kiln lock cannot reach the mirror to resolve versions" },
  CI_NO_SPECS: { exit: 1, meaning: "kiln ci found no spec to build" },
  CI_SPEC_PATH: { exit: 1, meaning: "a spec's path or name cannot go into a workflow as it is" },
  BUILD_NO_KERNEL: { exit: 1, meaning: "the image has no kernel in /boot" },
  BUILD_PORTABLE_UNITS: { exit: 1, meaning: "a portable service image has no unit named after it" },
  UPDATE_KEYRING: { exit: 1, meaning: "update.keyring names no file" },
  CUSTOMISE_SHRINK: { exit: 1, meaning: "disk.size is smaller than the imported disk" },
  CUSTOMISE_GROW: {
    exit: 1,
    meaning: "the imported disk's root partition cannot be grown (not the last one)",
  },
  INSPECT_ADDON: { exit: 1, meaning: "a file is not a kiln add-on image (NAME_VERSION.raw)" },
  INSPECT_NO_BUNDLE: { exit: 1, meaning: "the bundle to inspect does not exist" },
  BOOT_NO_ARTIFACT: { exit: 1, meaning: "the artifact to boot does not exist" },
  BOOT_FORMAT: { exit: 1, meaning: "the artifact to boot is not a directory, tar or disk image" },
  BOOT_PERSIST_DISK: { exit: 1, meaning: "--persist was asked of a disk image booted in nspawn" },
  BOOT_NO_DIR: { exit: 1, meaning: "the root filesystem to boot is not a directory" },
  BOOT_NO_INIT: { exit: 1, meaning: "the root filesystem has no init system" },
  BOOT_FAILED: {
    exit: 2,
    meaning:
      "a boot never became ready (panic, emergency shell, time-out); the console tail follows",
  },
  TEST_NOT_FOUND: { exit: 2, meaning: "the spec or artifact to test does not exist" },
  TEST_NOTHING: {
    exit: 2,
    meaning: "nothing to test: no output kiln test can boot, or a target with no checks",
  },
  OVMF_MISSING: { exit: 1, meaning: "no UEFI firmware (OVMF, or AAVMF for arm64) is installed" },
  BINFMT_MISSING: {
    exit: 1,
    meaning:
      "programs of another architecture cannot run here (qemu-user-static through binfmt_misc)",
  },
  GRUB_MODULES: { exit: 1, meaning: "kiln knows no GRUB UEFI platform for the architecture" },
  FOREIGN_DEB: {
    exit: 1,
    meaning:
      "a Debian package for another architecture (GRUB modules, busybox) could not be fetched",
  },
  VM_NO_IMAGE: { exit: 1, meaning: "the disk image to boot does not exist" },
  VM_NO_SEED: { exit: 1, meaning: "the seed to attach does not exist" },
  VM_BAD_SEED: { exit: 1, meaning: "a seed directory lacks user-data or meta-data" },
  VM_NO_ESP: { exit: 1, meaning: "a disk has no EFI system partition to read the boot entry from" },
  VM_NO_ENTRY: { exit: 1, meaning: "grub.cfg has no entry for the slot to boot" },
  VM_NO_ROOT: { exit: 1, meaning: "the filesystem the boot entry names is not on the disk" },
  VM_NOT_FOUND: { exit: 1, meaning: "there is no named VM of that name" },
  VM_RUNNING: { exit: 1, meaning: "the named VM is already running" },
  VM_NAME_IN_USE: { exit: 1, meaning: "a running VM already has that name" },
  VM_NAME_TAKEN: { exit: 1, meaning: "a named VM was made from another image" },
  VM_IMAGE_CHANGED: { exit: 1, meaning: "a named VM's image was rebuilt or removed since" },
  SSH_NO_VM: { exit: 1, meaning: "no running VM of that name to log in to" },
  SSH_WHICH_VM: { exit: 1, meaning: "several VMs run; name the one to log in to" },
  DISK_NO_ROOT: { exit: 1, meaning: "a disk has no Linux root partition" },
  DISK_TOO_SMALL: { exit: 1, meaning: "disk.size cannot hold what the spec installs" },
  IMPORT_SOURCE: { exit: 1, meaning: "the file or URL to import does not exist" },
  IMPORT_DOWNLOAD: { exit: 1, meaning: "a download failed (HTTP status or a stall)" },
  IMPORT_CHECKSUMS: {
    exit: 1,
    meaning: "the checksum list could not be fetched or has no line for the file",
  },
  IMPORT_BAD_SUM: { exit: 1, meaning: "a digest is not SHA-512 or SHA-256 hex" },
  IMPORT_CHECKSUM: {
    exit: 1,
    meaning: "the download does not match its digest; nothing was stored",
  },
  IMPORT_NO_DISK: { exit: 1, meaning: "an archive holds no disk image" },
  IMPORT_NO_TABLE: { exit: 1, meaning: "an imported disk has no partition table kiln can read" },
  IMPORT_NAME: { exit: 1, meaning: "an import name kiln cannot store" },
  IMPORT_EXISTS: {
    exit: 1,
    meaning: "a disk of that name is imported already (--force replaces it)",
  },
  IMAGE_NOT_IMPORTED: { exit: 1, meaning: "base: image:NAME names no imported disk" },
  IMAGE_REF: { exit: 125, meaning: "an image reference kiln cannot parse" },
  IMAGE_MISSING: { exit: 1, meaning: "no stored image of that name and tag" },
  PULL_UNKNOWN: { exit: 1, meaning: "kiln pull knows no distribution of that name" },
  PULL_REGISTRY: { exit: 1, meaning: "a registry pull failed" },
  PULL_OCI_LAYOUT: { exit: 1, meaning: "a directory is not an OCI image layout" },
  PUSH_REF: { exit: 2, meaning: "kiln push: a registry reference kiln cannot push to" },
  PUSH_NO_DISK: { exit: 1, meaning: "kiln push: the build has no qcow2 or raw disk output" },
  PUSH_CHANGED: {
    exit: 1,
    meaning: "kiln push: an output no longer matches the sha256 its manifest records",
  },
  PUSH_SUMS: {
    exit: 1,
    meaning: "kiln push: SHA256SUMS is unsigned, lacks the disk, or cannot be signed",
  },
  PUSH_REGISTRY: { exit: 1, meaning: "kiln push: skopeo could not push to the registry" },
  PUSH_CREDS: { exit: 2, meaning: "KILN_REGISTRY_CREDS is not USER:PASSWORD" },
  OCI_DIGEST: {
    exit: 1,
    meaning: "a blob from a registry is missing or does not hash to its digest; nothing was stored",
  },
  OCI_LAYER_BAD: { exit: 1, meaning: "an image layer is not a tar archive kiln can read" },
  ROOT_CACHE_BAD: {
    exit: 1,
    meaning: "a cached root filesystem is not a tar archive kiln can read (kiln build --refresh)",
  },
  OCI_NOT_DISK: {
    exit: 1,
    meaning:
      "an image is not a containerDisk kiln accepts (no disk/ file, several, links, paths outside); nothing was stored",
  },
  OCI_SUMS: {
    exit: 1,
    meaning:
      "a pushed image's SHA256SUMS disagrees with its disk, or its signature does not verify; nothing was stored",
  },
  RUN_NO_IMAGE: { exit: 125, meaning: "kiln run: the image is not stored locally" },
  RUN_NOT_FOUND: { exit: 127, meaning: "kiln run: the command is not in the image's PATH" },
  RUN_VOLUME: { exit: 125, meaning: "kiln run: a volume's source does not exist or is malformed" },
  RUN_DETACH: { exit: 125, meaning: "kiln run -d takes no terminal or stdin" },
  RUN_NAME: { exit: 125, meaning: "kiln run: a container name docker would refuse" },
  RUN_NAME_IN_USE: { exit: 125, meaning: "kiln run: a container of that name exists" },
  NO_CONTAINER: { exit: 1, meaning: "no container of that name" },
  STOP_TIMEOUT: { exit: 1, meaning: "a container's kiln process did not finish in time" },
  RM_RUNNING: { exit: 1, meaning: "a running container cannot be removed without -f" },
  PROBE_NO_IMAGE: { exit: 1, meaning: "kiln probe: an image is not stored locally" },
  PROBE_NO_DEB: { exit: 1, meaning: "kiln probe: the .deb to install does not exist" },
  SEED_NO_USER: { exit: 1, meaning: "an autoinstall seed needs a user for its identity" },
  SEED_VALIDATOR: { exit: 1, meaning: "cloud-init's schema check could not be set up" },
  SEED_INVALID: { exit: 1, meaning: "the generated seed fails its validator" },
  AGENT_KEYRING: { exit: 1, meaning: "agent.keyring names no file" },
  ADDON_LIST_INVALID: { exit: 1, meaning: "a signed add-on list is malformed" },
  ADDON_KEY: { exit: 1, meaning: "the add-on signing key does not exist" },
  ADDON_SERIAL: {
    exit: 1,
    meaning: "an add-on list serial is malformed or not above the last one",
  },
  ADDON_MISSING: { exit: 1, meaning: "an add-on the inventory names cannot be read" },
  ADDON_PIN: { exit: 1, meaning: "an add-on's file does not match the sha256 the inventory pins" },
  KEYS_EXIST: { exit: 1, meaning: "kiln keys init would overwrite keys" },
  BUNDLE_SOURCE: { exit: 1, meaning: "kiln bundle's source is neither a spec nor a build output" },
  BUNDLE_NO_ROOTFS: { exit: 1, meaning: "a build output has no directory or tar to bundle" },
  BUNDLE_NOT_AB: { exit: 1, meaning: "the root filesystem is not of an A/B system" },
  BUNDLE_KEY: { exit: 1, meaning: "a signing key or certificate file does not exist" },
  BUNDLE_VERSION: {
    exit: 1,
    meaning: "a bundle version devices cannot compare (Debian version syntax)",
  },
  NETBOOT_ROOT: { exit: 1, meaning: "the netboot root image's hash or size could not be recorded" },
  BUNDLE_INVALID: { exit: 1, meaning: "a bundle's signature or contents do not verify" },
  SERVE_NO_INTERFACE: { exit: 1, meaning: "kiln serve's interface has no IPv4 address" },
  SERVE_NO_RANGE: { exit: 1, meaning: "full DHCP needs --range" },
  SERVE_NO_IPXE: { exit: 1, meaning: "Debian's ipxe package (the PXE ROM kiln serves) is missing" },
  SERVE_ADMIN_TOKEN_MODE: {
    exit: 1,
    meaning: "the admin token file is readable by others or not owned by kiln serve's user",
  },
  SERVE_ADMIN_TOKEN_BAD: { exit: 1, meaning: "the admin token file does not hold a kiln token" },
  SERVE_ADMIN_ON_BOOT: {
    exit: 1,
    meaning: "the admin listener would share the boot listener's address and port",
  },
  SERVE_DNSMASQ: { exit: 1, meaning: "dnsmasq would not start" },
  FLEET_DB_BAD: { exit: 1, meaning: "the fleet database file is not one kiln can open" },
  FLEET_DB_NEWER: { exit: 1, meaning: "the fleet database was made by a newer kiln" },
  FLEET_DB_CONNECT: { exit: 1, meaning: "the PostgreSQL fleet database cannot be reached" },
  MACHINE_UNKNOWN: { exit: 1, meaning: "kiln machines: no machine with that id" },
} as const satisfies Record<string, { exit: number; meaning: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface KilnErrorOptions {
  hint?: string;
  loc?: SourceLocation;
  cause?: unknown;
  /** Process exit status the CLI should use, when not the code's own. */
  exitCode?: number;
}

/** Every error a user may see; its code is one of ERROR_CODES. */
export class KilnError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly loc: SourceLocation | undefined;
  readonly exitCode: number;

  constructor(code: ErrorCode, message: string, opts: KilnErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "KilnError";
    this.code = code;
    this.hint = opts.hint;
    this.loc = opts.loc;
    this.exitCode = opts.exitCode ?? ERROR_CODES[code].exit;
  }
}

/** One problem found in a spec, with where it is. */
export interface Diagnostic {
  loc: SourceLocation;
  message: string;
  /** Source excerpt with a caret, ready to print. */
  frame?: string;
}

/** A spec with one or more problems; all of them are reported at once. */
export class SpecError extends KilnError {
  readonly diagnostics: Diagnostic[];

  constructor(diagnostics: Diagnostic[]) {
    const first = diagnostics[0];
    super(
      "SPEC_INVALID",
      diagnostics
        .map((d) => `${d.loc.file}:${d.loc.line}:${d.loc.column}: ${d.message}`)
        .join("\n"),
      first ? { loc: first.loc } : {},
    );
    this.name = "SpecError";
    this.diagnostics = diagnostics;
  }
}

/** A host program kiln needs is not installed. */
export class ToolMissingError extends KilnError {
  readonly tool: string;
  constructor(tool: string, pkg: string | undefined) {
    super("TOOL_MISSING", `${tool} not found`, {
      hint: `install it with \`kiln doctor --install\`${pkg ? ` (Debian package ${pkg})` : ""}`,
    });
    this.tool = tool;
  }
}

/** Something kiln itself got wrong: a bug, printed with its stack. */
export class InternalError extends KilnError {
  constructor(message: string, cause?: unknown) {
    super("INTERNAL", message, { cause });
    this.name = "InternalError";
  }
}
