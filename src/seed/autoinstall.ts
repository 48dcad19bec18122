import { stringify } from "yaml";
import { parseSize, type Spec } from "../config/schema.js";
import { KilnError } from "../util/errors.js";
import { cloudConfig } from "./nocloud.js";
import { type Secrets, type SeedAccounts, seedHostname } from "./users.js";

const MiB = 1024 * 1024;

/** curtin storage actions: the spec's layout (ESP + root, or ESP + root A + root B + data). */
export function storageConfig(spec: Spec): Record<string, unknown>[] {
  const target = spec.seed?.disk ?? "largest";
  const disk: Record<string, unknown> = {
    type: "disk",
    id: "disk0",
    ptable: "gpt",
    wipe: "superblock-recursive",
    preserve: false,
    ...(target === "largest" ? { match: { size: "largest" } } : { path: target }),
  };
  const esp = Math.round(parseSize(spec.disk.esp_size) / MiB);
  const parts: [string, number, string | undefined][] = [["esp", esp, "/boot/efi"]];
  if (spec.disk.layout === "ab") {
    // Root B has the size of root A; data takes the rest of the disk.
    const root = spec.disk.size ? Math.round(parseSize(spec.disk.size) / MiB / 3) : 4096;
    parts.push(["root-a", root, "/"], ["root-b", root, undefined]);
    parts.push(["data", -1, "/var/lib/kiln/data"]);
  } else parts.push(["root-a", -1, "/"]);
  const actions: Record<string, unknown>[] = [disk];
  // BIOS machines need a bios_grub partition on GPT; curtin makes one when the disk is the grub device.
  actions.push({
    type: "partition",
    id: "bios",
    device: "disk0",
    number: 1,
    size: "1M",
    flag: "bios_grub",
  });
  parts.forEach(([id, mib], i) => {
    actions.push({
      type: "partition",
      id,
      device: "disk0",
      number: i + 2,
      size: mib < 0 ? -1 : `${mib}M`,
      ...(id === "esp" ? { flag: "boot", grub_device: true } : {}),
    });
  });
  for (const [id] of parts)
    actions.push({
      type: "format",
      id: `${id}-fs`,
      volume: id,
      fstype: id === "esp" ? "fat32" : "ext4",
      label: id,
    });
  for (const [id, , path] of parts)
    if (path) actions.push({ type: "mount", id: `${id}-mount`, device: `${id}-fs`, path });
  return actions;
}

/**
 * Subiquity autoinstall user-data. The identity (the installer's one
 * required account) is the first seed user; its password is always a hash,
 * generated per build when the spec gives none, so an install is never
 * left with a known or empty password.
 */
export function autoinstall(spec: Spec, acc: SeedAccounts, secrets: Secrets): string {
  const [first, ...rest] = acc.users;
  if (!first)
    throw new KilnError("SEED_NO_USER", "autoinstall needs at least one user (its identity)", {
      hint: "add one under users: or seed.users:",
    });
  let hash = first.hash;
  if (!hash) {
    const password = secrets.generate();
    acc.credentials.push({ user: first.name, password });
    hash = secrets.hash(password);
  }
  const later = cloudConfig(spec, { ...acc, users: rest });
  delete later.hostname;
  delete later.manage_etc_hosts;
  if (!rest.length) delete later.users;
  const config = {
    autoinstall: {
      version: 1,
      identity: { hostname: seedHostname(spec), username: first.name, password: hash },
      ssh: {
        "install-server": true,
        "authorized-keys": first.keys,
        "allow-pw": !first.keys.length,
      },
      storage: { config: storageConfig(spec) },
      ...(spec.packages.length ? { packages: spec.packages } : {}),
      ...(Object.keys(later).length ? { "user-data": later } : {}),
    },
  };
  return `#cloud-config\n${stringify(config, { lineWidth: 0 })}`;
}
