/**
 * Every host program kiln runs, with the Debian package that provides it.
 * `kiln doctor` lists these; `exec` uses the table to turn "not found" into
 * an install hint.
 */
export interface HostTool {
  name: string;
  pkg: string;
  /** Arguments that print a version; absent when the tool has no such flag. */
  version?: string[];
  /** What kiln uses it for, shown by `kiln doctor`. */
  purpose: string;
}

export const HOST_TOOLS: readonly HostTool[] = [
  { name: "mmdebstrap", pkg: "mmdebstrap", version: ["--version"], purpose: "root filesystems" },
  {
    name: "systemd-nspawn",
    pkg: "systemd-container",
    version: ["--version"],
    purpose: "container boots",
  },
  {
    name: "qemu-system-x86_64",
    pkg: "qemu-system-x86",
    version: ["--version"],
    purpose: "VM boots",
  },
  {
    name: "qemu-system-aarch64",
    pkg: "qemu-system-arm",
    version: ["--version"],
    purpose: "arm64 VM boots",
  },
  {
    name: "qemu-aarch64-static",
    pkg: "qemu-user-static",
    version: ["--version"],
    purpose: "arm64 programs on this host (binfmt_misc)",
  },
  { name: "arch-test", pkg: "arch-test", purpose: "mmdebstrap: foreign architectures" },
  { name: "qemu-img", pkg: "qemu-utils", version: ["--version"], purpose: "qcow2 and VM formats" },
  { name: "sfdisk", pkg: "fdisk", version: ["--version"], purpose: "GPT partition tables" },
  { name: "mkfs.ext4", pkg: "e2fsprogs", version: ["-V"], purpose: "root filesystems on disk" },
  { name: "debugfs", pkg: "e2fsprogs", version: ["-V"], purpose: "reading ext4 images" },
  { name: "mkfs.vfat", pkg: "dosfstools", version: ["--help"], purpose: "EFI system partition" },
  {
    name: "mcopy",
    pkg: "mtools",
    version: ["--version"],
    purpose: "files onto FAT without mounts",
  },
  { name: "mmd", pkg: "mtools", version: ["--version"], purpose: "directories on FAT" },
  { name: "grub-mkimage", pkg: "grub-common", version: ["--version"], purpose: "GRUB core images" },
  { name: "grub-editenv", pkg: "grub-common", version: ["--version"], purpose: "grubenv" },
  {
    name: "grub-mkrescue",
    pkg: "grub-common",
    version: ["--version"],
    purpose: "installer ISOs (BIOS + UEFI)",
  },
  {
    name: "unshare",
    pkg: "util-linux",
    version: ["--version"],
    purpose: "private mount namespaces",
  },
  { name: "tar", pkg: "tar", version: ["--version"], purpose: "tar outputs" },
  { name: "zstd", pkg: "zstd", version: ["--version"], purpose: "compression" },
  {
    name: "mksquashfs",
    pkg: "squashfs-tools",
    version: ["-version"],
    purpose: "netboot root images",
  },
  { name: "busybox", pkg: "busybox-static", purpose: "the netboot initrd" },
  { name: "cpio", pkg: "cpio", version: ["--version"], purpose: "initrd archives" },
  {
    name: "dnsmasq",
    pkg: "dnsmasq-base",
    version: ["--version"],
    purpose: "kiln serve: proxy-DHCP and TFTP",
  },
  { name: "xorriso", pkg: "xorriso", version: ["-version"], purpose: "cloud-init seed ISOs" },
  { name: "ssh", pkg: "openssh-client", version: ["-V"], purpose: "kiln ssh" },
  { name: "ssh-keygen", pkg: "openssh-client", purpose: "kiln ssh key" },
  {
    name: "script",
    pkg: "bsdutils",
    version: ["--version"],
    purpose: "a terminal for nspawn consoles",
  },
  {
    name: "openssl",
    pkg: "openssl",
    version: ["version"],
    purpose: "update signing keys, password hash checks",
  },
  { name: "rauc", pkg: "rauc", version: ["--version"], purpose: "signed A/B update bundles" },
  { name: "umoci", pkg: "umoci", version: ["--version"], purpose: "OCI image layouts" },
  {
    name: "skopeo",
    pkg: "skopeo",
    version: ["--version"],
    purpose: "kiln pull docker://…, kiln push, kiln import oci://…",
  },
];

/** Firmware and module trees kiln reads, with their packages. */
export const HOST_FILES: readonly { path: string; pkg: string; purpose: string }[] = [
  { path: "/usr/lib/grub/x86_64-efi", pkg: "grub-efi-amd64-bin", purpose: "GRUB for UEFI" },
  { path: "/usr/lib/grub/i386-pc/grub-bios-setup", pkg: "grub-pc-bin", purpose: "GRUB for BIOS" },
  { path: "/usr/share/OVMF", pkg: "ovmf", purpose: "UEFI firmware for VMs" },
  { path: "/usr/share/AAVMF", pkg: "qemu-efi-aarch64", purpose: "UEFI firmware for arm64 VMs" },
  { path: "/usr/lib/ipxe/undionly.kpxe", pkg: "ipxe", purpose: "network boot loaders" },
  // cloud-init's schema check (kiln seed) runs from Debian's cloud-init package unpacked into
  // kiln's cache, on the host's Python with these modules; cloud-init itself is never installed.
  ...(
    [
      ["configobj", "python3-configobj"],
      ["jinja2", "python3-jinja2"],
      ["jsonpatch.py", "python3-jsonpatch"],
      ["jsonschema", "python3-jsonschema"],
      ["requests", "python3-requests"],
      ["yaml", "python3-yaml"],
    ] as const
  ).map(([mod, pkg]) => ({
    path: `/usr/lib/python3/dist-packages/${mod}`,
    pkg,
    purpose: "cloud-init schema check (kiln seed)",
  })),
];

/**
 * Packages that must never be installed on the host: they replace
 * /etc/resolv.conf with a dangling link and break apt and mmdebstrap.
 */
export const FORBIDDEN_HOST_PACKAGES = ["systemd-resolved", "libnss-resolve", "debos"] as const;

export function packageFor(tool: string): string | undefined {
  return HOST_TOOLS.find((t) => t.name === tool)?.pkg;
}
