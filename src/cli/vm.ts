import { appendFileSync, existsSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import type { Command } from "commander";
import { diskArch } from "../image/partitions.js";
import { reportingBoot } from "../runtime/boot-report.js";
import { domainXml } from "../runtime/libvirt.js";
import {
  emulatorFault,
  type Firmware,
  MACHINES,
  runVmInteractive,
  startVm,
  type VmOptions,
} from "../runtime/qemu.js";
import {
  bootFailure,
  bootUntilReady,
  breakdownText,
  chainText,
  slowestText,
} from "../runtime/ready.js";
import { freePort, recordVm, vmKey } from "../runtime/ssh.js";
import { listNamedVms, openNamedVm, removeNamedVm } from "../runtime/vmstore.js";
import { KilnError } from "../util/errors.js";
import { log } from "../util/log.js";
import { printJson, printTable } from "./output.js";

interface VmFlags {
  firmware: string;
  arch?: string;
  accel: string;
  cpus?: string;
  memory: string;
  persist?: boolean;
  forward?: string[];
  seed?: string;
  directKernel?: boolean;
  netboot?: string;
  consoleLog?: string;
  ssh?: boolean;
  name?: string;
  untilReady?: boolean;
  printLibvirt?: boolean;
  cdrom?: string;
  disk?: string[];
  reboot?: boolean;
  timeout: string;
  json?: boolean;
}

/**
 * How long after the login prompt to wait for the guest's boot report: it
 * follows within a few seconds on an idle TCG host (the last units settle,
 * then systemd-analyze runs).
 */
const REPORT_MS = 30_000;

export function registerVm(program: Command): void {
  const vm = program
    .command("vm")
    .argument("[image]", "a raw or qcow2 disk image")
    .option("--firmware <kind>", "uefi or bios", "uefi")
    .option(
      "--arch <arch>",
      "amd64 or arm64 (default: from the build's manifest.json beside the image, or the disk's root partition type)",
    )
    .option("--accel <kind>", "auto (probe KVM, fall back to TCG), kvm or tcg", "auto")
    .option("--cpus <n>", "virtual CPUs (default 2 with KVM, 1 under TCG)")
    .option("--memory <MiB>", "memory", "1024")
    .option("--persist", "write changes to the image (default: thrown away)")
    .option("--forward <host:guest...>", "TCP port forwards on user networking, e.g. 8080:80")
    .option(
      "--seed <dir-or-iso>",
      "attach a cloud-init NoCloud seed (a directory becomes a cidata ISO)",
    )
    .option(
      "--netboot <dir>",
      "boot a netboot bundle (outputs: [netboot]) over HTTP from this host, no disk",
    )
    .option(
      "--direct-kernel",
      "boot the image's kernel and initrd directly (skips firmware and GRUB)",
    )
    .option(
      "--disk <image...>",
      "more disks after the image (vdb, …): e.g. a mirrored root's NAME-disk2.raw",
    )
    .option("--cdrom <iso>", "attach an ISO as a CD drive (e.g. an `outputs: [iso]` installer)")
    .option("--no-reboot", "exit when the guest reboots (e.g. after an unattended install)")
    .option("--console-log <file>", "also write the serial console to this file")
    .option(
      "--ssh",
      "forward a free port to the guest's sshd and authorize kiln's key for root (see `kiln ssh`)",
    )
    .option(
      "--name <name>",
      "a kept VM: its disk overlay, seed and UEFI variables stay in kiln's store for the next `kiln vm --name N` (also the `kiln ssh` name)",
    )
    .option(
      "--print-libvirt",
      "print a libvirt domain XML for the image (virsh define FILE) instead of booting it",
    )
    .option("--until-ready", "boot, report time to ready, shut down (exit 2 if not ready)")
    .option("--timeout <seconds>", "with --until-ready", "300")
    .option("--json", "with --until-ready: the report as JSON")
    .description("boot a disk image in QEMU, serial console on this terminal (Ctrl-A X quits)")
    .action(async (imageArg: string | undefined, o: VmFlags) => {
      const firmware = o.firmware as Firmware;
      if (firmware !== "uefi" && firmware !== "bios") throw usage("--firmware is uefi or bios");
      if (o.printLibvirt) {
        if (!imageArg) throw usage("--print-libvirt needs a disk image");
        process.stdout.write(
          domainXml({
            name: o.name ?? basename(imageArg).replace(/\.(qcow2|raw|img|vmdk|vdi|vhdx)$/, ""),
            image: imageArg,
            arch: await imageArch(imageArg, o.arch),
            firmware,
            cpus: o.cpus ? Number(o.cpus) : 2,
            memoryMiB: Number(o.memory),
          }),
        );
        return;
      }
      let image = imageArg ?? "";
      if (!image && !o.netboot && !o.name) throw usage("give a disk image, or --netboot DIR");
      let named: Awaited<ReturnType<typeof openNamedVm>> | undefined;
      if (o.name && !o.netboot) {
        named = await openNamedVm(o.name, imageArg, o.seed);
        image = named.disk;
      }
      if (!["auto", "kvm", "tcg"].includes(o.accel)) throw usage("--accel is auto, kvm or tcg");
      const forwards = (o.forward ?? []).map((f) => {
        const [h, g] = f.split(":").map(Number);
        if (!h || !g) throw usage(`bad --forward ${f}: expected HOST:GUEST`);
        return { host: h, guest: g };
      });
      const arch = await imageArch(imageArg ?? o.netboot ?? image, o.arch);
      const opts: VmOptions = {
        image,
        arch,
        firmware,
        accel: o.accel as VmOptions["accel"],
        ...(o.cpus ? { cpus: Number(o.cpus) } : {}),
        memoryMiB: Number(o.memory),
        persist: !!o.persist || !!named,
        forwards,
        ...(o.seed ? { seed: o.seed } : {}),
        ...(named?.seed ? { seed: named.seed } : {}),
        ...(named ? { varsFile: named.vars } : {}),
        ...(o.directKernel ? { directKernel: true } : {}),
        ...(o.cdrom ? { cdrom: o.cdrom } : {}),
        ...(o.disk?.length ? { disks: o.disk } : {}),
        ...(o.reboot === false ? { noReboot: true } : {}),
        ...(o.netboot ? { netboot: o.netboot } : {}),
        ...(o.consoleLog ? { onConsole: (t: string) => appendFileSync(o.consoleLog!, t) } : {}),
      };
      let forget: (() => Promise<void>) | undefined;
      if (o.ssh) {
        const { key, pub } = await vmKey();
        const port = await freePort();
        forwards.push({ host: port, guest: 22 });
        opts.credentials = { "ssh.authorized_keys.root": `${pub}\n` };
        const name = o.name ?? basename(image).replace(/\.(qcow2|raw|img)$/, "");
        forget = await recordVm({ name, port, key, pid: process.pid, image: imageArg ?? image });
        process.stderr.write(`ssh: kiln ssh ${name}   (port ${port})\n`);
      }
      try {
        if (o.untilReady) {
          const rb = await reportingBoot(opts);
          const timeout = Number(o.timeout) * 1000;
          const boot = async () => {
            const vm = await startVm(rb.opts);
            const r = await bootUntilReady(
              `${firmware} (${vm.accel})`,
              vm,
              timeout,
              rb.reports ? REPORT_MS : 0,
            );
            return { vm, r };
          };
          let run: Awaited<ReturnType<typeof boot>>;
          try {
            run = await boot();
            const fault = run.r.ready ? undefined : emulatorFault(run.vm.proc, run.r.reason);
            if (fault) {
              log.warn(`${fault}: not the image's fault; booting again`);
              run = await boot();
            }
          } finally {
            await rb.dispose();
          }
          const { vm, r } = run;
          if (o.json) printJson({ ...r, accel: vm.accel, firmware });
          else if (r.ready) {
            console.log(
              `${firmware}/${vm.accel}: ready in ${r.seconds}s${breakdownText(r.breakdown)}`,
            );
            const slow = slowestText(r);
            if (slow) console.log(`  ${slow}`);
            const chain = chainText(r);
            if (chain) console.log(`  ${chain}`);
          }
          if (!r.ready) {
            // With --json the report (reason and console tail included) is the whole answer.
            if (o.json) process.exitCode = 2;
            else throw bootFailure(r);
          }
          return;
        }
        if (o.consoleLog) {
          // A person is at the terminal: keep the console there and copy it to the log as well.
          const vm = await startVm(opts);
          vm.proc.child.stdout?.pipe(process.stdout);
          process.stdin.pipe(vm.proc.child.stdin!);
          await vm.proc.exited;
          await vm.stop();
          return;
        }
        await runVmInteractive(opts);
      } finally {
        await forget?.();
        await named?.release();
      }
    });
  registerVmStore(vm);
}

function registerVmStore(vm: Command): void {
  vm.command("ls")
    .option("--json", "as JSON")
    .description("named VMs (`kiln vm --name N`) and what they keep")
    .action((_o: unknown, cmd: Command) => {
      const all = listNamedVms();
      // `vm` has a --json of its own, which commander gives the flag to.
      if (cmd.optsWithGlobals().json) return printJson(all);
      printTable([
        ["NAME", "STATE", "WRITTEN", "CREATED", "IMAGE"],
        ...all.map((v) => [
          v.name,
          v.running ? `running (pid ${v.pid})` : "stopped",
          `${(v.bytes / 2 ** 20).toFixed(1)} MiB`,
          v.created.slice(0, 19).replace("T", " "),
          v.image,
        ]),
      ]);
    });
  vm.command("rm")
    .argument("<name...>")
    .option("--purge", "delete the disk overlay, seed and UEFI variables (required)")
    .description("remove named VMs")
    .action(async (names: string[], o: { purge?: boolean }) => {
      for (const n of names) {
        await removeNamedVm(n, !!o.purge);
        console.log(n);
      }
    });
}

/**
 * The machine an image needs: --arch, else what the build's manifest beside
 * it says, else the root partition's type on a raw disk, else amd64.
 */
async function imageArch(image: string, flag: string | undefined): Promise<string> {
  if (flag) {
    if (!MACHINES[flag]) throw usage(`--arch is ${Object.keys(MACHINES).join(" or ")}`);
    return flag;
  }
  if (!image) return "amd64";
  const full = resolve(image);
  for (const dir of [full, dirname(full)]) {
    const mf = join(dir, "manifest.json");
    if (!existsSync(mf)) continue;
    try {
      const m = JSON.parse(readFileSync(mf, "utf8")) as {
        distribution?: { architecture?: string };
        artifacts?: { path: string }[];
      };
      const ours = dir === full || m.artifacts?.some((a) => a.path === basename(full));
      if (ours && m.distribution?.architecture) return m.distribution.architecture;
    } catch {}
  }
  if (existsSync(full) && statSync(full).isFile() && !/\.(qcow2|vmdk|vdi|vhdx)$/.test(full))
    return (await diskArch(full)) ?? "amd64";
  return "amd64";
}

function usage(msg: string): KilnError {
  return new KilnError("USAGE", msg, { exitCode: 2 });
}
