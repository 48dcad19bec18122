import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import type { Command } from "commander";
import { KilnError } from "../util/errors.js";

export const STARTER_SPEC = `# yaml-language-server: $schema=https://kiln.dev/schema/spec.json
# A kiln spec. \`kiln build THIS_FILE\` makes the outputs below;
# \`kiln build --plan THIS_FILE\` shows what it would do.
name: NAME
# extends: ./base.yaml              # compose: lists merge by key, scalars override
distribution:
  id: debian                        # debian | ubuntu
  release: bookworm                 # bookworm | trixie (ubuntu: noble, ...)
packages: [openssh-server]
profile: minimal                    # no docs, man pages, locales, recommends
hostname: NAME
timezone: Etc/UTC
users:
  - name: admin
    password: generate              # per build; plaintext in OUT/credentials (0600)
    groups: [sudo]
    ssh_authorized_keys: []
# root stays locked unless you set root.password
files:
  - { path: /etc/motd, content: "hello from kiln\\n", mode: "0644" }
  # - { source: ./overlay, path: / }
services:
  enable: []
network:
  interfaces:
    - { match: "en* eth*", dhcp: true }
kernel:
  cmdline: ""
disk:
  layout: single                    # single | ab (root A + root B + data)
  firmware: [uefi, bios]
outputs: [disk, qcow2]              # directory, tar, disk, qcow2, vmdk, vdi, vhdx, iso, netboot, oci, portable, sysext
limits:
  installed_size: 250M
tests:
  - { unit: ssh.service }
  - { run: hostname, stdout: "^NAME$" }
`;

export function registerInit(program: Command): void {
  program
    .command("init")
    .argument("[file]", "where to write the spec", "kiln.yaml")
    .option("--name <name>", "system name", "mysystem")
    .option("--force", "overwrite an existing file")
    .description("write a commented starter spec")
    .action(async (file: string, o: { name: string; force?: boolean }) => {
      if (existsSync(file) && !o.force)
        throw new KilnError("INIT_EXISTS", `${file} exists`, { hint: "use --force to overwrite" });
      await writeFile(file, STARTER_SPEC.replaceAll("NAME", o.name));
      console.log(`wrote ${file}; next: kiln build ${file}`);
    });
}
