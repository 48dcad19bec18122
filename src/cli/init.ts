import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Command } from "commander";
import { specJsonSchema } from "../config/jsonschema.js";
import { KilnError } from "../util/errors.js";

/** Written beside the spec by `kiln init`: editors read the schema from a file kiln wrote, not a URL. */
export const SCHEMA_FILE = "kiln.schema.json";

export const STARTER_SPEC = `# yaml-language-server: $schema=./${SCHEMA_FILE}
# A kiln spec; its JSON Schema, for editors, is ./${SCHEMA_FILE}
# (\`kiln schema > ${SCHEMA_FILE}\` refreshes it). \`kiln build THIS_FILE\` makes the outputs below;
# \`kiln build --plan THIS_FILE\` shows what it would do.
name: NAME
# extends: ./base.yaml              # compose: lists merge by key, scalars override
distribution:
  id: debian                        # debian | ubuntu
  release: bookworm                 # bookworm | trixie (ubuntu: noble, ...)
  updates: true                     # build from and keep bookworm-updates
  security: true                    # ... and bookworm-security
packages: [openssh-server]
profile: minimal                    # no docs, man pages, locales, recommends
dbus: true                          # a system bus (hostnamectl, busctl); false leaves it out
hostname: NAME
timezone: Etc/UTC
users:
  - name: admin
    password: generate              # per build; plaintext in OUT/credentials (0600)
    groups: [sudo]                  # group sudo brings the sudo package
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
outputs: [disk, qcow2]              # directory, tar, disk, qcow2, vmdk, vdi, vhdx, gce, azure, aws, iso, netboot, oci, portable, sysext
limits:
  installed_size: 250M
tests:
  - { unit: ssh.service }
  - { run: hostname, stdout: "^NAME$" }
  - { name: security updates, run: "grep -h '^deb ' /etc/apt/sources.list", stdout: "-security " }
  - { name: admin may sudo, run: "sudo -l -U admin", stdout: "\\\\(ALL : ALL\\\\) ALL" }
  - { name: system bus, run: hostnamectl, stdout: "Static hostname: NAME" }
  - { name: root grows, unit: kiln-growfs-root.service, on: [uefi, bios] }
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
      // Always this kiln's schema: the file is generated, never edited by hand.
      const schema = join(dirname(file), SCHEMA_FILE);
      await writeFile(schema, `${JSON.stringify(specJsonSchema(), null, 2)}\n`);
      console.log(`wrote ${file} and ${schema}; next: kiln build ${file}`);
    });
}
