import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import type { Spec } from "../config/schema.js";
import { networkdUnits } from "../render/networkd.js";
import { KilnError } from "../util/errors.js";
import { shellQuote } from "../util/shell.js";
import { type SeedAccounts, seedHostname } from "./users.js";

/**
 * Ignition config spec 3.4.0, the parts kiln writes, as strict types: an
 * unknown or misspelt key is an error here, where Ignition would only warn
 * on first boot and the machine would come up without it.
 * (https://coreos.github.io/ignition/configuration-v3_4/)
 */
const resource = z.strictObject({
  source: z
    .string()
    .regex(
      /^(data:|https?:|s3:|tftp:|gs:|arn:)/,
      "source must be a data:, http(s), s3, gs or tftp URL",
    )
    .nullable()
    .optional(),
  compression: z.enum(["gzip", ""]).nullable().optional(),
  verification: z
    .strictObject({
      hash: z
        .string()
        .regex(/^sha(256|512)-[0-9a-f]+$/)
        .nullable()
        .optional(),
    })
    .optional(),
});
const owner = z
  .strictObject({
    id: z.number().int().nullable().optional(),
    name: z.string().nullable().optional(),
  })
  .optional();
const node = {
  path: z.string().startsWith("/"),
  overwrite: z.boolean().nullable().optional(),
  user: owner,
  group: owner,
};
export const ignitionSchema = z.strictObject({
  ignition: z.strictObject({ version: z.literal("3.4.0") }),
  passwd: z
    .strictObject({
      users: z
        .array(
          z.strictObject({
            name: z.string().min(1),
            passwordHash: z.string().nullable().optional(),
            sshAuthorizedKeys: z.array(z.string()).optional(),
            groups: z.array(z.string()).optional(),
            shell: z.string().nullable().optional(),
            uid: z.number().int().nullable().optional(),
          }),
        )
        .optional(),
      groups: z
        .array(z.strictObject({ name: z.string().min(1), gid: z.number().int().optional() }))
        .optional(),
    })
    .optional(),
  storage: z
    .strictObject({
      files: z
        .array(
          z.strictObject({
            ...node,
            mode: z.number().int().min(0).max(0o7777).nullable().optional(),
            contents: resource.optional(),
          }),
        )
        .optional(),
      directories: z
        .array(
          z.strictObject({
            ...node,
            mode: z.number().int().min(0).max(0o7777).nullable().optional(),
          }),
        )
        .optional(),
      links: z
        .array(
          z.strictObject({ ...node, target: z.string(), hard: z.boolean().nullable().optional() }),
        )
        .optional(),
    })
    .optional(),
  systemd: z
    .strictObject({
      units: z
        .array(
          z.strictObject({
            name: z
              .string()
              .regex(/\.(service|socket|target|timer|mount|path|slice)$/, "not a unit name"),
            enabled: z.boolean().nullable().optional(),
            mask: z.boolean().nullable().optional(),
            contents: z.string().nullable().optional(),
          }),
        )
        .optional(),
    })
    .optional(),
});
export type IgnitionConfig = z.infer<typeof ignitionSchema>;

/** Problems in an Ignition config as `$.path: message` lines; empty when it is valid. */
export function validateIgnition(config: unknown): string[] {
  const r = ignitionSchema.safeParse(config);
  if (r.success) return [];
  return r.error.issues.map(
    (i) =>
      `$${i.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("")}: ${i.message}`,
  );
}

const dataUrl = (content: Buffer | string) =>
  `data:;base64,${Buffer.from(content).toString("base64")}`;

type IgnFile = NonNullable<NonNullable<IgnitionConfig["storage"]>["files"]>[number];

/** Spec files as Ignition files; a source directory contributes every file under it. */
function specFiles(spec: Spec): IgnFile[] {
  const out: IgnFile[] = [];
  for (const f of spec.files) {
    const mode = f.mode ? Number.parseInt(f.mode, 8) : undefined;
    const [user, group] = (f.owner ?? "").split(":");
    const own = {
      ...(user ? { user: { name: user } } : {}),
      ...(user ? { group: { name: group ?? user } } : {}),
    };
    const add = (path: string, content: Buffer | string) =>
      out.push({
        path,
        overwrite: true,
        ...(mode !== undefined ? { mode } : { mode: 0o644 }),
        ...own,
        contents: { source: dataUrl(content) },
      });
    if (f.content !== undefined) {
      add(f.path, f.content);
      continue;
    }
    // load.ts has made sources absolute (relative to the spec file).
    const src = f.source!;
    if (!existsSync(src))
      throw new KilnError("SPEC_FILE_SOURCE", `files: source ${f.source} does not exist`);
    const walk = (from: string, to: string) => {
      if (statSync(from).isDirectory())
        for (const e of readdirSync(from).sort()) walk(join(from, e), `${to}/${e}`);
      else add(to, readFileSync(from));
    };
    walk(src, f.path);
  }
  return out;
}

/** A oneshot unit that runs seed.runcmd once, at the end of the first boot. */
function runcmdUnit(cmds: string[]): string {
  return [
    "[Unit]",
    "Description=kiln seed runcmd (first boot)",
    "ConditionPathExists=!/var/lib/kiln/runcmd.done",
    "After=network-online.target",
    "Wants=network-online.target",
    "",
    "[Service]",
    "Type=oneshot",
    ...cmds.map((c) => `ExecStart=/bin/sh -c ${shellQuote(c)}`),
    "ExecStartPost=/bin/sh -c 'mkdir -p /var/lib/kiln && touch /var/lib/kiln/runcmd.done'",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/** An Ignition 3.4.0 config: accounts, host name, network, files, units, runcmd. */
export function ignition(spec: Spec, acc: SeedAccounts): IgnitionConfig {
  const users = acc.users.map((u) => ({
    name: u.name,
    ...(u.hash ? { passwordHash: u.hash } : {}),
    ...(u.keys.length ? { sshAuthorizedKeys: u.keys } : {}),
    ...(u.groups.length ? { groups: u.groups } : {}),
    shell: u.shell,
  }));
  if (acc.root.hash || acc.root.keys.length)
    users.unshift({
      name: "root",
      ...(acc.root.hash ? { passwordHash: acc.root.hash } : {}),
      ...(acc.root.keys.length ? { sshAuthorizedKeys: acc.root.keys } : {}),
    } as (typeof users)[number]);
  const files: IgnFile[] = [
    {
      path: "/etc/hostname",
      overwrite: true,
      mode: 0o644,
      contents: { source: dataUrl(`${seedHostname(spec)}\n`) },
    },
    ...networkdUnits(spec.network.interfaces).map(([name, text]) => ({
      path: `/etc/systemd/network/${name}`,
      overwrite: true,
      mode: 0o644,
      contents: { source: dataUrl(text) },
    })),
    ...specFiles(spec),
  ];
  const units: NonNullable<NonNullable<IgnitionConfig["systemd"]>["units"]> = [
    ...spec.services.enable.map((name) => ({ name, enabled: true })),
    ...spec.services.disable.map((name) => ({ name, enabled: false })),
    ...spec.services.mask.map((name) => ({ name, mask: true })),
  ];
  const runcmd = spec.seed?.runcmd ?? [];
  if (runcmd.length)
    units.push({ name: "kiln-runcmd.service", enabled: true, contents: runcmdUnit(runcmd) });
  return {
    ignition: { version: "3.4.0" },
    ...(users.length ? { passwd: { users } } : {}),
    storage: { files },
    ...(units.length ? { systemd: { units } } : {}),
  };
}
