import type { Command } from "commander";
import { defaultDb, openFleet } from "../fleet/open.js";
import {
  MACHINE_STATES,
  type MachineFilter,
  type MachineState,
  type MachineSummary,
  machineState,
} from "../fleet/store.js";
import { KilnError } from "../util/errors.js";

const DB_HELP = "fleet database: the SQLite file or postgres://… URL kiln serve writes";

/** "90s", "15m", "2h", "7d" → milliseconds. */
export function parseAge(s: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(s);
  if (!m)
    throw new KilnError("USAGE", `--seen ${JSON.stringify(s)} is not an age`, {
      hint: "e.g. --seen 15m (s, m, h, d)",
      exitCode: 2,
    });
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "s"];
}

/** A client-chosen value for a terminal: anything but printable ASCII becomes "?". */
function printable(s: string): string {
  return s.replace(/[^ -~]/g, "?");
}

function addons(m: MachineSummary): string {
  const r = m.report;
  if (!r) return "-";
  const list = r.attached.map((a) => `${a.name} ${a.version}`).join(", ") || "(none)";
  return r.ok ? list : `${list} [FAILING]`;
}

function table(list: MachineSummary[]): string {
  const rows = list.map((m) => [
    m.id,
    m.group ?? "(unmatched)",
    m.profile ?? "-",
    machineState(m),
    printable(m.facts.serial ?? "-"),
    m.lastSeen,
    printable(addons(m)),
  ]);
  const head = ["MACHINE", "GROUP", "PROFILE", "STATE", "SERIAL", "LAST SEEN", "ADD-ONS"];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows]
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(width[i]!)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

export function registerMachines(program: Command): void {
  const machines = program
    .command("machines")
    .description(
      "the fleet kiln serve knows: machines, their group, boots, installs and agent reports (ls, show, reinstall, forget)",
    );

  machines
    .command("ls", { isDefault: true })
    .description(
      "list machines (unmatched and failing first in the dashboard; newest seen first here)",
    )
    .option("--db <file|url>", DB_HELP, defaultDb())
    .option("--group <name>", "only this group")
    .option("--profile <name>", "only this profile")
    .option("--state <state>", `only this state (${MACHINE_STATES.join(", ")})`)
    .option("--seen <age>", "only machines seen within AGE (e.g. 15m, 2h, 7d)")
    .option("--json", "machine-readable output")
    .action(
      async (o: {
        db: string;
        group?: string;
        profile?: string;
        state?: string;
        seen?: string;
        json?: boolean;
      }) => {
        if (o.state && !MACHINE_STATES.includes(o.state as MachineState))
          throw new KilnError("USAGE", `--state is one of ${MACHINE_STATES.join(", ")}`, {
            exitCode: 2,
          });
        const f: MachineFilter = {
          ...(o.group ? { group: o.group } : {}),
          ...(o.profile ? { profile: o.profile } : {}),
          ...(o.state ? { state: o.state as MachineState } : {}),
          ...(o.seen ? { seenWithinMs: parseAge(o.seen) } : {}),
        };
        const fleet = await openFleet(o.db);
        try {
          const list = (await fleet.list(f)).map((m) => ({ ...m, state: machineState(m) }));
          // bin/kiln.js waits for stdout to drain before it exits, so a long listing arrives whole.
          if (o.json) return void process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
          process.stdout.write(
            list.length ? `${table(list)}\n` : "no machines (none has asked, or none matches)\n",
          );
        } finally {
          await fleet.close();
        }
      },
    );

  machines
    .command("show <id>")
    .description("one machine: facts, boot history, agent reports")
    .option("--db <file|url>", DB_HELP, defaultDb())
    .option("--json", "machine-readable output")
    .action(async (id: string, o: { db: string; json?: boolean }) => {
      const fleet = await openFleet(o.db);
      try {
        const m = await fleet.get(id.toLowerCase());
        if (!m)
          throw new KilnError("MACHINE_UNKNOWN", `no machine ${id} in ${fleet.where}`, {
            hint: "kiln machines ls lists them",
          });
        if (o.json)
          return void process.stdout.write(
            `${JSON.stringify({ ...m, state: machineState(m) }, null, 2)}\n`,
          );
        const lines = [
          `machine   ${m.id}`,
          `state     ${machineState(m)}`,
          `group     ${m.group ?? "(unmatched)"}   profile ${m.profile ?? "-"}`,
          `seen      ${m.firstSeen} … ${m.lastSeen} (${m.requests} boot requests)`,
          "facts",
          ...Object.entries(m.facts).map(([k, v]) => `  ${k.padEnd(10)} ${printable(v)}`),
          `boots (newest first, ${m.boots.length})`,
          ...m.boots.map(
            (b) =>
              `  ${b.at}  ${(b.profile ?? "-").padEnd(12)} ${(b.artifact ?? "-").padEnd(24)} via ${b.server}`,
          ),
          `agent reports (newest first, ${m.reports.length})`,
          ...m.reports.map(
            (r) =>
              `  ${r.at}  ${r.ok ? "ok     " : "FAILING"} ${r.attached.map((a) => `${a.kind} ${a.name} ${a.version}`).join(", ") || "(nothing attached)"}${r.failed.length ? `\n      failed: ${r.failed.join("; ")}` : ""}`,
          ),
        ];
        process.stdout.write(`${lines.join("\n")}\n`);
      } finally {
        await fleet.close();
      }
    });

  machines
    .command("reinstall <id>")
    .description(
      "install the machine's disk again at its next network boot (its profile must say install:)",
    )
    .option("--db <file|url>", DB_HELP, defaultDb())
    .option("--json", "machine-readable output")
    .action(async (id: string, o: { db: string; json?: boolean }) => {
      const fleet = await openFleet(o.db);
      try {
        const m = id.toLowerCase();
        if (!(await fleet.get(m)))
          throw new KilnError("MACHINE_UNKNOWN", `no machine ${id} in ${fleet.where}`, {
            hint: "kiln machines ls lists them",
          });
        const had = await fleet.resetInstall(m, "kiln machines reinstall");
        const text = had
          ? `${id} installs again at its next network boot`
          : `${id} has no install on record; it installs at its next network boot if its profile says install:`;
        process.stdout.write(
          o.json ? `${JSON.stringify({ machine: m, reinstall: true, had })}\n` : `${text}\n`,
        );
      } finally {
        await fleet.close();
      }
    });

  machines
    .command("forget <id>")
    .description(
      "delete a machine with its boots and reports (it is recorded again when it next asks)",
    )
    .option("--db <file|url>", DB_HELP, defaultDb())
    .option("--json", "machine-readable output")
    .action(async (id: string, o: { db: string; json?: boolean }) => {
      const fleet = await openFleet(o.db);
      try {
        const gone = await fleet.forget(id.toLowerCase());
        if (!gone)
          throw new KilnError("MACHINE_UNKNOWN", `no machine ${id} in ${fleet.where}`, {
            hint: "kiln machines ls lists them",
          });
        process.stdout.write(o.json ? `${JSON.stringify({ forgotten: id })}\n` : `forgot ${id}\n`);
      } finally {
        await fleet.close();
      }
    });
}
