import { resolve } from "node:path";
import { hostArch } from "../util/binfmt.js";
import type { Firmware } from "./qemu.js";

export interface DomainOptions {
  name: string;
  image: string;
  firmware: Firmware;
  cpus: number;
  memoryMiB: number;
  /** The guest's Debian architecture (default amd64). */
  arch?: string;
}

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/'/g, "&apos;");

/** The disk format libvirt must be told (it never probes, for safety). */
export function diskFormat(image: string): string {
  const ext = /\.(qcow2|vmdk|vdi|vhdx)$/.exec(image)?.[1];
  return ext ?? "raw";
}

/**
 * A libvirt domain matching what `kiln vm` runs: q35, virtio disk, network
 * and RNG, serial console; UEFI through libvirt's firmware auto-selection.
 * Load it with `virsh define FILE`; the serial console is `virsh console NAME`.
 */
export function domainXml(o: DomainOptions): string {
  const arm = o.arch === "arm64";
  // An arm64 guest: QEMU's virt machine, and on another architecture's host emulated (domain type qemu).
  const type = arm
    ? "<type arch='aarch64' machine='virt'>hvm</type>"
    : "<type arch='x86_64' machine='q35'>hvm</type>";
  const os =
    o.firmware === "uefi"
      ? `  <os firmware='efi'>\n    ${type}\n    <boot dev='hd'/>\n  </os>`
      : `  <os>\n    ${type}\n    <boot dev='hd'/>\n  </os>`;
  const native = !arm || hostArch() === "arm64";
  const cpu = native
    ? "<cpu mode='host-passthrough'/>"
    : "<cpu mode='custom'><model>cortex-a57</model></cpu>";
  return `<domain type='${native ? "kvm" : "qemu"}'>
  <name>${esc(o.name)}</name>
  <memory unit='MiB'>${o.memoryMiB}</memory>
  <vcpu>${o.cpus}</vcpu>
${os}
  <features>
    <acpi/>${arm ? "" : "\n    <apic/>"}
  </features>
  ${cpu}
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='${diskFormat(o.image)}'/>
      <source file='${esc(resolve(o.image))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
  </devices>
</domain>
`;
}
