import type { Command } from "commander";
import { kvmStatus } from "../runtime/accel.js";
import { fileStatus, installPackages, packagesToInstall, toolStatus } from "../util/doctor.js";
import { printJson } from "./output.js";

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
      if (o.json) {
        printJson({ ok: missing.length === 0, tools, files, accel, missing });
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
        if (missing.length)
          console.log(`\nmissing packages: ${missing.join(" ")}\nrun \`kiln doctor --install\``);
      }
      if (missing.length) process.exitCode = 1;
    });
}
