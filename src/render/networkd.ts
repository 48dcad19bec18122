import type { Spec } from "../config/schema.js";

/** systemd-networkd .network files for the spec's interfaces (DHCP by default). */
export function networkdUnits(interfaces: Spec["network"]["interfaces"]): [string, string][] {
  return interfaces.map((i, n) => {
    const lines = ["[Match]", `Name=${i.match}`, "", "[Network]"];
    if (i.dhcp && !i.address) lines.push("DHCP=yes");
    if (i.address) lines.push(`Address=${i.address}`);
    if (i.gateway) lines.push(`Gateway=${i.gateway}`);
    for (const d of i.dns) lines.push(`DNS=${d}`);
    return [`${String(10 + n).padStart(2, "0")}-kiln.network`, `${lines.join("\n")}\n`];
  });
}
