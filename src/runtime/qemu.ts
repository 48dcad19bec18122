import { existsSync } from "node:fs";
import { copyFile, mkdtemp, readFile, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { seedIso } from "../image/cidata.js";
import { hostArch } from "../util/binfmt.js";
import { acquire } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { exec, type Started, start } from "../util/exec.js";
import { serveDirectory } from "../util/http-dir.js";
import { log } from "../util/log.js";
import { type Accel, kvmStatus } from "./accel.js";
import { ConsoleWatcher, SILENT, STALL } from "./console.js";
import { type Injected, initrdWith } from "./ephemeral.js";
import { extractBoot, extractIsoBoot } from "./kernel.js";

export type Firmware = "uefi" | "bios";

/** Where distributions put OVMF (code, vars), most specific first. */
export const OVMF_CANDIDATES: [string, string][] = [
  ["/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"],
  ["/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"],
  ["/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"],
  ["/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"],
  ["/usr/share/qemu/edk2-x86_64-code.fd", "/usr/share/qemu/edk2-i386-vars.fd"],
];

/** The same for arm64 (AAVMF): 64 MiB pflash images, code and a variable store. */
export const AAVMF_CANDIDATES: [string, string][] = [
  ["/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"],
  [
    "/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw",
    "/usr/share/edk2/aarch64/vars-template-pflash.raw",
  ],
  ["/usr/share/qemu/edk2-aarch64-code.fd", "/usr/share/qemu/edk2-arm-vars.fd"],
];

export function findOvmf(
  candidates = OVMF_CANDIDATES,
  pkg = "ovmf",
): { code: string; vars: string } {
  for (const [code, vars] of candidates)
    if (existsSync(code) && existsSync(vars)) return { code, vars };
  const name = pkg === "ovmf" ? "OVMF" : "AAVMF";
  throw new KilnError("OVMF_MISSING", `no UEFI firmware (${name}) found`, {
    hint: `install it with \`kiln doctor --install\` (Debian package ${pkg})`,
  });
}

/** How QEMU emulates a machine of each Debian architecture. */
export interface Machine {
  binary: string;
  machine: string;
  /** The CPU under TCG (KVM takes the host's). */
  tcgCpu?: string;
  /** The kernel's name for the first serial port. */
  console: string;
  firmware(): { code: string; vars: string };
}

export const MACHINES: Record<string, Machine> = {
  amd64: {
    binary: "qemu-system-x86_64",
    machine: "q35",
    console: "ttyS0",
    firmware: () => findOvmf(),
  },
  arm64: {
    binary: "qemu-system-aarch64",
    machine: "virt",
    // A plain ARMv8.0 core: "max" adds pointer authentication, whose emulation
    // costs TCG much of its speed, and nothing in a server image needs it.
    tcgCpu: "cortex-a57",
    console: "ttyAMA0",
    firmware: () => findOvmf(AAVMF_CANDIDATES, "qemu-efi-aarch64"),
  },
};

export function machineFor(arch = "amd64"): Machine {
  const m = MACHINES[arch];
  if (!m) throw new KilnError("USAGE", `kiln boots amd64 and arm64 machines, not ${arch}`);
  return m;
}

export interface VmOptions {
  /** The disk; may be empty with `netboot`. */
  image: string;
  /** The guest's Debian architecture (default amd64); another than the host's runs under TCG. */
  arch?: string;
  firmware: Firmware;
  accel: Accel | "auto";
  cpus?: number;
  memoryMiB?: number;
  /** More disks after `image` (vdb, vdc, …): the other disks of a mirrored root, or blank ones. */
  disks?: string[];
  /** Keep the guest's writes (default: thrown away). */
  persist?: boolean;
  /** host:guest TCP forwards on user networking. */
  forwards?: { host: number; guest: number }[];
  /** A cloud-init NoCloud seed: a directory (made into a `cidata` ISO) or an ISO. */
  seed?: string;
  /** Boot the image's kernel and initrd directly, skipping firmware and GRUB. */
  directKernel?: boolean;
  /** Boot a netboot bundle directory instead of a disk: its root image is served over HTTP. */
  netboot?: string;
  /**
   * Boot an installer ISO's live system: its kernel and initrd directly (no
   * GRUB menu), the ISO as the CD it runs from.
   */
  iso?: string;
  /** Files added to the booted system through its initrd (netboot and ISO boots; see initrdWith). */
  inject?: Injected[];
  /** An ISO attached as a CD drive (installer ISOs); firmware boots it when the disk is not bootable. */
  cdrom?: string;
  /** Exit when the guest reboots (e.g. at the end of an unattended install). */
  noReboot?: boolean;
  /** Keep the UEFI variable store in this file across boots (named VMs); default: a fresh copy each boot. */
  varsFile?: string;
  /** systemd credentials passed over SMBIOS (e.g. ssh.authorized_keys.root). */
  credentials?: Record<string, string>;
  /** Console text as it arrives. */
  onConsole?: (text: string) => void;
}

export interface Vm {
  watcher: ConsoleWatcher;
  accel: Accel;
  proc: Started;
  /** Power down over QMP (persisting VMs get time to shut down cleanly), then force. */
  stop(): Promise<void>;
}

/** Resolve `auto` with the cached KVM probe; say so once when falling back. */
export async function chooseAccel(want: Accel | "auto", arch = "amd64"): Promise<Accel> {
  // KVM runs guests of the host's own architecture only.
  if (arch !== hostArch()) {
    if (want === "kvm")
      throw new KilnError("USAGE", `an ${arch} guest cannot use KVM on this ${hostArch()} host`, {
        hint: "leave --accel out (or use tcg): it is emulated",
        exitCode: 2,
      });
    return "tcg";
  }
  if (want !== "auto") return want;
  const s = await kvmStatus();
  if (s.usable === "tcg" && s.kvm !== "absent")
    log.warn(`KVM ${s.kvm} (${s.reason}); using TCG, which is slower`);
  return s.usable;
}

export interface QemuArgsInput extends VmOptions {
  accel: Accel;
  qmp: string;
  code?: string;
  vars?: string;
  seedIso?: string;
  kernel?: { kernel: string; initrd: string; cmdline: string };
  /** "stdio" for a watched pipe, "mon:stdio" for a person at a terminal. */
  serial?: string;
}

export function qemuArgs(o: QemuArgsInput): string[] {
  const m = machineFor(o.arch);
  const args = [
    "-machine",
    m.machine,
    // QEMU 7.2's multi-threaded TCG now and then loses a vCPU's timer interrupts
    // (RCU stalls, or a guest that hangs silently); one thread for all vCPUs
    // does not, and measured no slower on 2-core hosts (update test: 588 s vs 547-581 s).
    "-accel",
    o.accel === "tcg" ? "tcg,thread=single" : o.accel,
    // One emulation thread runs every vCPU under TCG, so a second vCPU only adds
    // switching: BIOS power-on to ready 22.5/22.7 s with two, 18.2/18.7 s with one.
    "-smp",
    String(o.cpus ?? (o.accel === "tcg" ? 1 : 2)),
    "-m",
    String(o.memoryMiB ?? 1024),
    "-nodefaults",
    "-nographic",
    "-no-user-config",
    "-serial",
    o.serial ?? "stdio",
    "-qmp",
    `unix:${o.qmp},server=on,wait=off`,
    "-device",
    "virtio-rng-pci",
  ];
  for (const disk of o.image ? [o.image, ...(o.disks ?? [])] : [])
    args.push(
      "-drive",
      `file=${disk},if=virtio,format=${disk.endsWith(".qcow2") ? "qcow2" : "raw"}${o.persist ? "" : ",snapshot=on"}`,
    );
  if (o.accel === "kvm") args.push("-cpu", "host");
  else if (m.tcgCpu) args.push("-cpu", m.tcgCpu);
  // On virtio-scsi rather than q35's AHCI: Debian's cloud kernels have no AHCI driver. It
  // boots first (bootindex), as when someone picks the CD in a boot menu: a disk with a
  // partition table but no boot code would otherwise stop SeaBIOS before it gets there.
  if (o.cdrom)
    args.push(
      "-device",
      "virtio-scsi-pci,id=kilncd",
      "-drive",
      `if=none,id=cd0,media=cdrom,readonly=on,file=${o.cdrom}`,
      "-device",
      // (A kernel given to QEMU boots first by itself, and takes bootindex 0.)
      `scsi-cd,bus=kilncd.0,drive=cd0${o.kernel ? "" : ",bootindex=0"}`,
    );
  if (o.noReboot) args.push("-no-reboot");
  const fwd = (o.forwards ?? [])
    .map((f) => `,hostfwd=tcp:127.0.0.1:${f.host}-:${f.guest}`)
    .join("");
  args.push("-netdev", `user,id=n0${fwd}`, "-device", "virtio-net-pci,netdev=n0");
  if (o.firmware === "uefi" && o.code && o.vars) {
    args.push(
      "-drive",
      `if=pflash,format=raw,unit=0,readonly=on,file=${o.code}`,
      "-drive",
      `if=pflash,format=raw,unit=1,file=${o.vars}`,
    );
  }
  if (o.kernel)
    args.push("-kernel", o.kernel.kernel, "-initrd", o.kernel.initrd, "-append", o.kernel.cmdline);
  // A virtio disk rather than a CD: its driver is in every initrd (kiln's tiny one loads no CD
  // drivers), so the seed is there when cloud-init's ds-identify looks, early in boot.
  if (o.seedIso) args.push("-drive", `file=${o.seedIso},if=virtio,format=raw,readonly=on`);
  for (const [name, value] of Object.entries(o.credentials ?? {})) {
    // SMBIOS type 11 strings are how systemd (>= 252) receives credentials in a VM.
    args.push(
      "-smbios",
      `type=11,value=io.systemd.credential.binary:${name}=${Buffer.from(value).toString("base64")}`,
    );
  }
  return args;
}

/** Everything a QEMU boot needs besides the process: firmware copy, seed ISO, kernel. */
async function prepare(
  o: VmOptions,
  serial: string,
): Promise<{ args: string[]; accel: Accel; dir: string; qmp: string; dispose(): Promise<void> }> {
  for (const disk of o.image ? [o.image, ...(o.disks ?? [])] : [])
    if (!existsSync(disk)) throw new KilnError("VM_NO_IMAGE", `${disk} does not exist`);
  if (o.arch === "arm64" && o.firmware === "bios" && !o.directKernel && !o.netboot && !o.iso)
    throw new KilnError("USAGE", "arm64 machines have no BIOS: boot them with UEFI", {
      exitCode: 2,
    });
  const accel = await chooseAccel(o.accel, o.arch);
  const m = machineFor(o.arch);
  const dir = await mkdtemp(join(tmpdir(), "kiln-vm-"));
  const qmp = join(dir, "qmp.sock");
  let http: Awaited<ReturnType<typeof serveDirectory>> | undefined;
  const undo = async () => {
    await http?.close();
    await rm(dir, { recursive: true, force: true });
  };
  const { value: args, dispose } = await acquire(`VM scratch ${dir}`, undo, async () => {
    const extra: Partial<QemuArgsInput> = {};
    if (o.firmware === "uefi" && !o.directKernel) {
      const ovmf = m.firmware();
      // Each boot gets its own writable copy of the variable store, unless it is kept.
      const vars = o.varsFile ?? join(dir, "vars.fd");
      if (!o.varsFile || !existsSync(vars)) await copyFile(ovmf.vars, vars);
      extra.code = ovmf.code;
      extra.vars = vars;
    }
    if (o.seed) extra.seedIso = await seedIso(o.seed, dir);
    if (o.directKernel) extra.kernel = await extractBoot(o.image, dir);
    if (o.netboot) {
      // The guest reaches the host's loopback as 10.0.2.2 on QEMU user networking.
      http = await serveDirectory(o.netboot);
      // The bundle's own kernel arguments (its console, `quiet`), as `kiln serve` hands them out.
      const own = join(o.netboot, "cmdline");
      const args = existsSync(own)
        ? (await readFile(own, "utf8")).trim()
        : `console=tty0 console=${m.console},115200`;
      extra.kernel = {
        kernel: join(o.netboot, "vmlinuz"),
        initrd: join(o.netboot, "initrd.img"),
        cmdline: `kiln.root=http://10.0.2.2:${http.port}/root.squashfs ${args}`.trimEnd(),
      };
    }
    if (o.iso) {
      extra.kernel = await extractIsoBoot(o.iso, dir);
      extra.cdrom = o.iso;
    }
    if (o.inject?.length && extra.kernel)
      extra.kernel.initrd = await initrdWith(extra.kernel.initrd, o.inject, dir);
    return qemuArgs({ ...o, ...extra, accel, qmp, serial });
  });
  return { args, accel, dir, qmp, dispose };
}

/**
 * A booting guest that prints nothing for this long has hung; failing it
 * then, rather than at the boot time-out, leaves time to boot it again.
 * With `quiet` nothing is printed between the boot loader and the login
 * prompt, a stretch that takes ~25 s on an idle TCG host and several times
 * that on one running the test suite beside it.
 */
const SILENCE_MS = 180_000;

/** Start a VM whose console kiln reads (tests, --until-ready). */
export async function startVm(o: VmOptions): Promise<Vm> {
  const p = await prepare(o, "stdio");
  const watcher = new ConsoleWatcher({ silenceMs: SILENCE_MS });
  let proc: Started;
  try {
    proc = await start(machineFor(o.arch).binary, p.args, {
      onData: (t) => {
        watcher.feed(t);
        o.onConsole?.(t);
      },
    });
  } catch (err) {
    await p.dispose();
    throw err;
  }
  void proc.exited.then((code) => watcher.exited(code, proc.child.signalCode));
  let stopped = false;
  const exitedWithin = (ms: number) =>
    Promise.race([
      proc.exited.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref()),
    ]);
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (o.persist) {
      // A persisting disk needs the guest to flush and unmount before QEMU goes.
      await qmp(p.qmp, { execute: "system_powerdown" }).catch(() => {});
      if (!(await exitedWithin(20_000))) {
        // Nothing in the guest answered the power button (images without logind):
        // have its kernel sync, remount read-only and power off (magic SysRq on the
        // emulated keyboard), so what it wrote is on the disk.
        for (const key of ["s", "u", "o"]) {
          await qmp(p.qmp, sysrq(key)).catch(() => {});
          await new Promise((r) => setTimeout(r, 1500));
        }
        await exitedWithin(10_000);
      }
    } else {
      // A throw-away snapshot needs no clean shutdown.
      await qmp(p.qmp, { execute: "quit" }).catch(() => {});
      await exitedWithin(3000);
    }
    await proc.stop(2000);
    await p.dispose();
  };
  return { watcher, accel: p.accel, proc, stop };
}

/** Run a VM with its serial console on this terminal until the guest or the user ends it. */
export async function runVmInteractive(o: VmOptions): Promise<Accel> {
  const p = await prepare(o, "mon:stdio");
  try {
    await exec(machineFor(o.arch).binary, p.args, { inherit: true });
  } finally {
    await p.dispose();
  }
  return p.accel;
}

/** Alt+SysRq+KEY as QMP send-key. */
function sysrq(key: string): Record<string, unknown> {
  const keys = ["alt", "sysrq", key].map((data) => ({ type: "qcode", data }));
  return { execute: "send-key", arguments: { keys } };
}

/** Send one QMP command (after the capabilities handshake). */
function qmp(sock: string, command: Record<string, unknown>): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = connect(sock);
    c.on("error", reject);
    c.on("connect", () => {
      c.write(`{"execute":"qmp_capabilities"}\n${JSON.stringify(command)}\n`);
      setTimeout(() => {
        c.destroy();
        resolve();
      }, 300);
    });
  });
}

/**
 * Why a failed boot was the emulator's fault rather than the image's, if it
 * was. QEMU 7.2's multi-threaded TCG now and then segfaults early in a boot,
 * or loses a vCPU's timer interrupts so the guest kernel reports an RCU
 * stall; neither says anything about the image, so callers boot once more.
 */
export function emulatorFault(
  proc: { child: { signalCode: NodeJS.Signals | null } },
  /** Why the boot failed, as the console watcher put it. */
  reason: string | undefined,
): string | undefined {
  const sig = proc.child.signalCode;
  if (sig && ["SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL"].includes(sig))
    return `QEMU was killed by ${sig}`;
  if (reason?.startsWith(STALL))
    return "the guest's CPUs stalled (an RCU stall under the emulator)";
  if (reason?.startsWith(SILENT))
    return "the guest's console went silent (a hang under the emulator)";
  return undefined;
}
