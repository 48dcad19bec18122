import type { Command } from "commander";
import { kvmStatus } from "../runtime/accel.js";
import { binfmtStatus, hostArch } from "../util/binfmt.js";
import { fileStatus, installPackages, packagesToInstall, toolStatus } from "../util/doctor.js";
import { printJson } from "./output.js";

/** The architectures kiln builds besides the host's own. */
const FOREIGN = ["amd64", "arm64"].filter((a) => a !== hostArch());

export function registerDoctor(program: Command): void {
  program
    .command("doctor")
    .description("check the host tools kiln uses, and whether KVM works or only TCG")
    .option("--install", "install missing Debian packages (never systemd-resolved)")
    .option("--json", "machine-readable output")
    .option("--reprobe", "probe KVM again instead of using the cached answer")
    .action(async (o: { install?: boolean; json?: boolean; reprobe?: boolean }) => {
      let tools = await toolStatus();
      let files = fileStatus();
      if (o.install) {
        await installPackages(packagesToInstall(tools, files));
        tools = await toolStatus();
        files = fileStatus();
      }
      const accel = await kvmStatus(!!o.reprobe);
      const missing = packagesToInstall(tools, files);
      // Only reported: kiln registers what a build or run needs then, and says so.
      const binfmt = FOREIGN.map((a) => binfmtStatus(a));
      if (o.json) {
        printJson({ ok: missing.length === 0, tools, files, accel, binfmt, missing });
      } else {
        for (const t of tools) {
          console.log(
            `${t.path ? "✓" : "✗"} ${t.name.padEnd(20)} ${(t.version ?? (t.path ? "" : `missing (${t.pkg})`)).padEnd(22)} ${t.purpose}`,
          );
        }
        for (const f of files)
          console.log(
            `${f.present ? "✓" : "✗"} ${f.path.padEnd(43)} ${f.purpose}${f.present ? "" : ` (${f.pkg})`}`,
          );
        console.log(
          `\nacceleration: ${accel.usable.toUpperCase()} — KVM ${accel.kvm}: ${accel.reason}`,
        );
        for (const b of binfmt)
          console.log(`${b.ok ? "✓" : "·"} ${b.arch} programs (binfmt_misc): ${b.note}`);
        if (missing.length)
          console.log(`\nmissing packages: ${missing.join(" ")}\nrun \`kiln doctor --install\``);
      }
      if (missing.length) process.exitCode = 1;
    });
}
