import { stringify } from "yaml";
import type { Spec } from "../config/schema.js";
import { cacheKey } from "../util/hash.js";
import { type SeedAccounts, seedHostname } from "./users.js";

export interface NoCloudSeed {
  "user-data": string;
  "meta-data": string;
  "network-config": string;
}

const yaml = (v: unknown) => stringify(v, { lineWidth: 0 });

/** cloud-config for the spec's hostname, accounts and runcmd. */
export function cloudConfig(spec: Spec, acc: SeedAccounts): Record<string, unknown> {
  const hostname = seedHostname(spec);
  const config: Record<string, unknown> = {
    hostname,
    manage_etc_hosts: true,
    // Only the spec's accounts: no distribution default user (e.g. "debian") appears.
    users: acc.users.map((u) => ({
      name: u.name,
      shell: u.shell,
      ...(u.groups.length ? { groups: u.groups.join(", ") } : {}),
      lock_passwd: !u.hash,
      ...(u.hash ? { passwd: u.hash } : {}),
      ...(u.keys.length ? { ssh_authorized_keys: u.keys } : {}),
    })),
  };
  if (acc.root.hash || acc.root.keys.length) {
    // root as one more entry: cloud-init skips creating it and sets its hash and keys.
    (config.users as unknown[]).push({
      name: "root",
      lock_passwd: !acc.root.hash,
      ...(acc.root.hash ? { passwd: acc.root.hash } : {}),
      ...(acc.root.keys.length ? { ssh_authorized_keys: acc.root.keys } : {}),
    });
    // Otherwise cloud-init prefixes root's keys with "Please login as the user …" and a refusal.
    if (acc.root.keys.length) config.disable_root = false;
  }
  const runcmd = spec.seed?.runcmd ?? [];
  if (runcmd.length) config.runcmd = runcmd;
  return config;
}

/** Network config version 2, one ethernet entry per interface glob. */
export function networkConfig(spec: Spec): Record<string, unknown> {
  const ethernets: Record<string, unknown> = {};
  let n = 0;
  for (const i of spec.network.interfaces) {
    for (const glob of i.match.split(/\s+/).filter(Boolean)) {
      const e: Record<string, unknown> = { match: { name: glob } };
      if (i.address) {
        e.addresses = [i.address];
        if (i.gateway) e.routes = [{ to: "0.0.0.0/0", via: i.gateway }];
      } else e.dhcp4 = i.dhcp;
      if (i.dns.length) e.nameservers = { addresses: i.dns };
      ethernets[`kiln${n++}`] = e;
    }
  }
  return { version: 2, ethernets };
}

/**
 * The three NoCloud files. The instance id is a hash of what the seed says,
 * so a changed seed is applied again on the next boot and an unchanged one is not.
 */
export function noCloudSeed(spec: Spec, acc: SeedAccounts): NoCloudSeed {
  const userData = `#cloud-config\n${yaml(cloudConfig(spec, acc))}`;
  const network = yaml(networkConfig(spec));
  const id = cacheKey(userData, network).slice(0, 12);
  return {
    "user-data": userData,
    "meta-data": yaml({
      "instance-id": `${spec.name}-${id}`,
      "local-hostname": seedHostname(spec),
    }),
    "network-config": network,
  };
}
