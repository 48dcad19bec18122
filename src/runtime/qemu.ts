import { existsSync } from "node:fs";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KilnError } from "../util/errors.js";
import { type Started, start } from "../util/exec.js";
import { log } from "../util/log.js";
import { type Accel, kvmStatus } from "./accel.js";
import { ConsoleWatcher } from "./console.js";

export type Firmware = "uefi" | "bios";

/** Where distributions put OVMF (code, vars), most specific first. */
export const OVMF_CANDIDATES: [string, string][] = [
  ["/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"],
  ["/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"],
  ["/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"],
  ["/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"],
  ["/usr/share/qemu/edk2-x86_64-code.fd", "/usr/share/qemu/edk2-i386-vars.fd"],
];

export function findOvmf(candidates = OVMF_CANDIDATES): { code: string; vars: string } {
  for (const [code, vars] of candidates)
    if (existsSync(code) && existsSync(vars)) return { code, vars };
  throw new KilnError("OVMF_MISSING", "no UEFI firmware (OVMF) found", {
    hint: "install it with `kiln doctor --install` (Debian package ovmf)",
  });
}

export interface VmOptions {
  image: string;
  firmware: Firmware;
  accel: Accel | "auto";
  cpus?: number;
  memoryMiB?: number;
  /** Keep the guest's writes (default: thrown away). */
  persist?: boolean;
  /** host:guest TCP forwards on user networking. */
  forwards?: { host: number; guest: number }[];
  /** Extra drives (e.g. a cloud-init seed ISO). */
  extraDrives?: string[];
  /** Console text as it arrives. */
  onConsole?: (text: string) => void;
}

export interface Vm {
  watcher: ConsoleWatcher;
  accel: Accel;
  proc: Started;
  /** Clean shutdown over QMP, then force. */
  stop(): Promise<void>;
}

/** Resolve `auto` with the cached KVM probe; say so once when falling back. */
export async function chooseAccel(want: Accel | "auto"): Promise<Accel> {
  if (want !== "auto") return want;
  const s = await kvmStatus();
  if (s.usable === "tcg" && s.kvm !== "absent")
    log.warn(`KVM ${s.kvm} (${s.reason}); using TCG, which is slower`);
  return s.usable;
}

export function qemuArgs(
  o: VmOptions & { accel: Accel; qmp: string; vars?: string; code?: string },
): string[] {
  const format = o.image.endsWith(".qcow2") ? "qcow2" : "raw";
  const args = [
    "-machine",
    `q35,accel=${o.accel}`,
    "-smp",
    String(o.cpus ?? 2),
    "-m",
    String(o.memoryMiB ?? 1024),
    "-nodefaults",
    "-nographic",
    "-no-user-config",
    "-serial",
    "stdio",
    "-qmp",
    `unix:${o.qmp},server=on,wait=off`,
    "-drive",
    `file=${o.image},if=virtio,format=${format}${o.persist ? "" : ",snapshot=on"}`,
    "-device",
    "virtio-rng-pci",
  ];
  if (o.accel === "kvm") args.push("-cpu", "host");
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
  for (const d of o.extraDrives ?? []) args.push("-drive", `file=${d},media=cdrom,readonly=on`);
  return args;
}

export async function startVm(o: VmOptions): Promise<Vm> {
  if (!existsSync(o.image)) throw new KilnError("VM_NO_IMAGE", `${o.image} does not exist`);
  const accel = await chooseAccel(o.accel);
  const dir = await mkdtemp(join(tmpdir(), "kiln-vm-"));
  const qmp = join(dir, "qmp.sock");
  let fw: { code?: string; vars?: string } = {};
  if (o.firmware === "uefi") {
    const ovmf = findOvmf();
    // Each boot gets its own writable copy of the variable store.
    await copyFile(ovmf.vars, join(dir, "vars.fd"));
    fw = { code: ovmf.code, vars: join(dir, "vars.fd") };
  }
  const watcher = new ConsoleWatcher();
  const proc = await start("qemu-system-x86_64", qemuArgs({ ...o, accel, qmp, ...fw }), {
    onData: (t) => {
      watcher.feed(t);
      o.onConsole?.(t);
    },
  });
  void proc.exited.then((code) => watcher.exited(code));
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await qmpQuit(qmp).catch(() => {});
    await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 3000))]);
    await proc.stop(2000);
    await rm(dir, { recursive: true, force: true });
  };
  return { watcher, accel, proc, stop };
}

/** Ask QEMU to quit over its QMP socket (the guest's disk is a throw-away snapshot). */
function qmpQuit(sock: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = connect(sock);
    c.on("error", reject);
    c.on("connect", () => {
      c.write('{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n');
      setTimeout(() => {
        c.destroy();
        resolve();
      }, 300);
    });
  });
}
