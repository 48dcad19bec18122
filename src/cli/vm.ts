import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { chooseAccel, type Firmware, findOvmf, qemuArgs, startVm } from "../runtime/qemu.js";
import { bootFailure, bootUntilReady } from "../runtime/ready.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { printJson } from "./output.js";

export function registerVm(program: Command): void {
  program
    .command("vm")
    .argument("<image>", "a raw or qcow2 disk image")
    .option("--firmware <kind>", "uefi or bios", "uefi")
    .option("--accel <kind>", "auto (probe KVM, fall back to TCG), kvm or tcg", "auto")
    .option("--cpus <n>", "virtual CPUs", "2")
    .option("--memory <MiB>", "memory", "1024")
    .option("--persist", "write changes to the image (default: thrown away)")
    .option("--forward <host:guest...>", "TCP port forwards on user networking, e.g. 2222:22")
    .option("--until-ready", "boot, report time to ready, shut down (exit 2 if not ready)")
    .option("--timeout <seconds>", "with --until-ready", "300")
    .option("--json", "with --until-ready: the report as JSON")
    .description("boot a disk image in QEMU, console on this terminal (Ctrl-A X quits)")
    .action(async (image: string, o: Record<string, string | boolean | string[] | undefined>) => {
      const firmware = o.firmware as Firmware;
      if (firmware !== "uefi" && firmware !== "bios")
        throw new KilnError("USAGE", "--firmware is uefi or bios", { exitCode: 2 });
      const accelWant = o.accel as "auto" | "kvm" | "tcg";
      if (!["auto", "kvm", "tcg"].includes(accelWant))
        throw new KilnError("USAGE", "--accel is auto, kvm or tcg", { exitCode: 2 });
      const forwards = ((o.forward as string[] | undefined) ?? []).map((f) => {
        const [h, g] = f.split(":").map(Number);
        if (!h || !g)
          throw new KilnError("USAGE", `bad --forward ${f}: expected HOST:GUEST`, { exitCode: 2 });
        return { host: h, guest: g };
      });
      const common = {
        image,
        firmware,
        cpus: Number(o.cpus),
        memoryMiB: Number(o.memory),
        persist: !!o.persist,
        forwards,
      };
      if (o.untilReady) {
        const vm = await startVm({ ...common, accel: accelWant });
        const r = await bootUntilReady(`${firmware} (${vm.accel})`, vm, Number(o.timeout) * 1000);
        if (o.json) printJson({ ...r, accel: vm.accel, firmware });
        else if (r.ready) console.log(`${firmware}/${vm.accel}: ready in ${r.seconds}s`);
        if (!r.ready) {
          // With --json the report (reason and console tail included) is the whole answer.
          if (o.json) process.exitCode = 2;
          else throw bootFailure(r);
        }
        return;
      }
      const accel = await chooseAccel(accelWant);
      const dir = await mkdtemp(join(tmpdir(), "kiln-vm-"));
      try {
        let fw = {};
        if (firmware === "uefi") {
          const ovmf = findOvmf();
          await copyFile(ovmf.vars, join(dir, "vars.fd"));
          fw = { code: ovmf.code, vars: join(dir, "vars.fd") };
        }
        const args = qemuArgs({ ...common, accel, qmp: join(dir, "qmp.sock"), ...fw }).map((a) =>
          a === "stdio" ? "mon:stdio" : a,
        );
        await exec("qemu-system-x86_64", args, { inherit: true });
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
}
