import type { Command } from "commander";
import { findVm, sshArgs } from "../runtime/ssh.js";
import { exec } from "../util/exec.js";

export function registerSsh(program: Command): void {
  program
    .command("ssh")
    .argument("[name]", "the VM's --name (default: the only one running)")
    .argument("[command...]", "run this instead of a login shell")
    .option("-l, --user <user>", "user to log in as", "root")
    .description("log in to a VM started with `kiln vm --ssh` (kiln's key, forwarded port)")
    .action(async (name: string | undefined, command: string[], o: { user: string }) => {
      const vm = await findVm(name);
      const r = await exec("ssh", sshArgs(vm, o.user, command), {
        inherit: true,
        okCodes: Array.from({ length: 256 }, (_, i) => i),
      });
      process.exitCode = r.code;
    });
}
