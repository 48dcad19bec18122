import { z } from "zod";
import { issuesToDiagnostics, parseYamlFile } from "../config/yaml.js";
import { SpecError } from "../util/errors.js";

/**
 * The inventory `kiln serve` boots machines from: profiles say what to boot,
 * groups say which machines get which profile. A group's selector matches
 * labels exactly; a list is an OR; the most specific matching group wins
 * (ties: the one listed first); a group without a selector is the default.
 */
const selectorValue = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

export const inventorySchema = z.strictObject({
  $schema: z.string().optional(),
  profiles: z.record(
    z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, "profile names use a-z, 0-9, '.', '_', '-'"),
    z.strictObject({
      artifact: z
        .string()
        .optional()
        .describe("a netboot output directory (vmlinuz, initrd.img, root.squashfs)"),
      addons: z
        .array(
          z.strictObject({
            kind: z.enum(["portable", "sysext"]),
            path: z
              .string()
              .regex(/(^|\/)[A-Za-z0-9.-]+_[A-Za-z0-9.-]+\.raw$/, "an image named NAME_VERSION.raw")
              .describe("a portable or sysext output of kiln build (relative to the inventory)"),
            sha256: z
              .string()
              .regex(/^[0-9a-f]{64}$/, "64 hex digits")
              .optional()
              .describe(
                "pin the image (e.g. from the build's manifest.json); default: the served file's hash",
              ),
          }),
        )
        .default([])
        .describe("what kiln-agent on these machines attaches"),
      install: z
        .strictObject({
          image: z
            .string()
            .describe(
              "a kiln build output directory with a disk output (its manifest.json gives the image, size and sha256)",
            ),
          target: z
            .union([
              z.literal("auto"),
              z
                .string()
                .regex(
                  /^\/dev\/(disk\/by-(path|id)\/[A-Za-z0-9:._+-]+|[a-z][a-z0-9]{1,15})$/,
                  "auto, or a device path such as /dev/disk/by-path/… or /dev/sda",
                ),
            ])
            .default("auto")
            .describe(
              "auto: the first disk with no partition table or signature (never the boot medium)",
            ),
          overwrite: z
            .boolean()
            .default(false)
            .describe("write over a disk that holds a partition table or filesystem"),
          after: z.enum(["reboot", "poweroff"]).default("reboot"),
        })
        .optional()
        .describe(
          "install to the machine's disk instead of running from RAM: artifact is then the installer (a netboot bundle)",
        ),
      kernel_args: z.string().default(""),
      metadata: z.record(z.string(), z.string()).default({}),
      cloud_init: z
        .strictObject({
          user_data: z.string().optional(),
          meta_data: z.record(z.string(), z.string()).default({}),
        })
        .optional(),
    }),
  ),
  groups: z
    .array(
      z.strictObject({
        name: z.string().min(1),
        profile: z.string(),
        selector: z
          .record(
            z.string().regex(/^[a-z][a-z0-9_-]*$/, "label names use a-z, 0-9, '_', '-'"),
            selectorValue,
          )
          .default({}),
      }),
    )
    .default([]),
});

export type Inventory = z.output<typeof inventorySchema>;
export type Group = Inventory["groups"][number];
export type Facts = Record<string, string>;

const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** MACs and UUIDs compare case-insensitively, in one spelling. */
export function normalizeFact(label: string, value: string): string {
  const v = value.trim();
  if (label === "mac") return v.toLowerCase().replace(/-/g, ":");
  if (label === "uuid") return v.toLowerCase();
  return v;
}

/** Check client-supplied facts; returns a problem in words, or undefined. */
export function invalidFacts(f: Facts): string | undefined {
  if (f.mac !== undefined && !MAC.test(f.mac))
    return `malformed MAC ${JSON.stringify(f.mac.slice(0, 40))}`;
  if (f.uuid !== undefined && f.uuid !== "" && !UUID.test(f.uuid))
    return `malformed UUID ${JSON.stringify(f.uuid.slice(0, 40))}`;
  for (const [k, v] of Object.entries(f)) {
    if (k.length > 64 || v.length > 256) return "a label or value is too long";
  }
  return undefined;
}

export function loadInventory(file: string): Inventory {
  const parsed = parseYamlFile(file, "inventory");
  const result = inventorySchema.safeParse(parsed.value);
  if (!result.success)
    throw new SpecError(issuesToDiagnostics(result.error.issues, parsed, inventorySchema));
  const inv = result.data;
  const problems = inv.groups.flatMap((g, i) => {
    const out: { path: (string | number)[]; message: string }[] = [];
    if (!inv.profiles[g.profile])
      out.push({
        path: ["groups", i, "profile"],
        message: `group ${g.name}: no profile named ${g.profile}`,
      });
    for (const [label, v] of Object.entries(g.selector)) {
      for (const value of Array.isArray(v) ? v : [v]) {
        const bad = invalidFacts({ [label]: normalizeFact(label, value) });
        if (bad)
          out.push({ path: ["groups", i, "selector", label], message: `group ${g.name}: ${bad}` });
      }
    }
    return out;
  });
  if (problems.length) {
    throw new SpecError(
      issuesToDiagnostics(
        problems.map((p) => ({
          code: "custom",
          path: p.path,
          message: p.message,
          input: undefined,
        })) as never,
        parsed,
        inventorySchema,
      ),
    );
  }
  return inv;
}

/** The group a machine belongs to, or undefined when none (and no default) matches. */
export function selectGroup(inv: Inventory, facts: Facts): Group | undefined {
  let best: Group | undefined;
  let bestScore = -1;
  for (const g of inv.groups) {
    const entries = Object.entries(g.selector);
    const matches = entries.every(([label, v]) => {
      const have = facts[label];
      if (have === undefined) return false;
      const want = (Array.isArray(v) ? v : [v]).map((x) => normalizeFact(label, x));
      return want.includes(normalizeFact(label, have));
    });
    if (matches && entries.length > bestScore) {
      best = g;
      bestScore = entries.length;
    }
  }
  return best;
}

/** The inventory's JSON Schema (committed as schema/inventory.json). */
export function inventoryJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(inventorySchema, { io: "input", unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return {
    ...schema,
    $id: "urn:kiln:schema:inventory",
    title: "kiln serve inventory",
  };
}
