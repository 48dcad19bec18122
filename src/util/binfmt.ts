import { existsSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { KilnError } from "./errors.js";
import { exec } from "./exec.js";

/**
 * Foreign-architecture programs (an arm64 root filesystem's maintainer
 * scripts, an arm64 container's init) run on this host through the kernel's
 * binfmt_misc handing them to qemu-user-static. Debian's package ships the
 * registrations in /usr/lib/binfmt.d, but only systemd-binfmt or
 * binfmt-support load them, and neither runs on a host whose PID 1 is not
 * systemd; kiln then mounts binfmt_misc and registers the one it needs
 * itself, and says what it changed.
 */

export const BINFMT_DIR = "/proc/sys/fs/binfmt_misc";

/** Debian architecture → QEMU's name for it (and the machine `uname -m` prints). */
export const QEMU_ARCH: Record<string, string> = { arm64: "aarch64", amd64: "x86_64" };

/** The Debian architecture of this host. */
export function hostArch(): string {
  return process.arch === "arm64" ? "arm64" : process.arch === "x64" ? "amd64" : process.arch;
}

export interface BinfmtStatus {
  arch: string;
  /** Runs natively: nothing to register. */
  native: boolean;
  /** binfmt_misc is mounted at BINFMT_DIR. */
  mounted: boolean;
  /** The kernel's entry for it, if any. */
  entry?: { enabled: boolean; interpreter: string; flags: string };
  /** qemu-user-static's registration line (from /usr/lib/binfmt.d), if installed. */
  line?: string;
  /** Usable as it is: enabled, with the F flag (the interpreter opened at registration, so it works in chroots). */
  ok: boolean;
  /** What is wrong or what kiln would do, for doctor. */
  note: string;
}

/** The registration file qemu-user-static installs for `arch`. */
function confFile(arch: string): string {
  return `/usr/lib/binfmt.d/qemu-${QEMU_ARCH[arch] ?? arch}.conf`;
}

/** "enabled\ninterpreter /x\nflags: OCF\n…" → its fields. */
export function parseEntry(text: string): { enabled: boolean; interpreter: string; flags: string } {
  const lines = text.split("\n");
  return {
    enabled: lines[0]?.trim() === "enabled",
    interpreter: /^interpreter (.*)$/m.exec(text)?.[1] ?? "",
    flags: /^flags: ?(.*)$/m.exec(text)?.[1] ?? "",
  };
}

export function binfmtStatus(arch: string): BinfmtStatus {
  const name = `qemu-${QEMU_ARCH[arch] ?? arch}`;
  if (arch === hostArch())
    return { arch, native: true, mounted: true, ok: true, note: "native architecture" };
  const mounted = existsSync(`${BINFMT_DIR}/register`);
  const conf = confFile(arch);
  const line = existsSync(conf)
    ? readFileSync(conf, "utf8")
        .split("\n")
        .find((l) => l.startsWith(":"))
    : undefined;
  const s: BinfmtStatus = {
    arch,
    native: false,
    mounted,
    ok: false,
    note: "",
    ...(line ? { line } : {}),
  };
  const path = `${BINFMT_DIR}/${name}`;
  if (mounted && existsSync(path)) s.entry = parseEntry(readFileSync(path, "utf8"));
  if (s.entry?.enabled && s.entry.flags.includes("F") && existsSync(s.entry.interpreter)) {
    s.ok = true;
    s.note = `${name} registered (flags ${s.entry.flags}, ${s.entry.interpreter})`;
  } else if (!line) s.note = "qemu-user-static is not installed";
  else if (!mounted)
    s.note = `binfmt_misc is not mounted; kiln mounts it and registers ${name} when needed`;
  else if (!s.entry) s.note = `${name} is not registered; kiln registers it (F flag) when needed`;
  else
    s.note = `${name} is registered but ${!s.entry.enabled ? "disabled" : "without the F flag"}; kiln leaves it alone`;
  return s;
}

/**
 * Make `arch` programs runnable here, doing the least that works; returns
 * what it changed on the host (empty when nothing), so callers can say so.
 */
export async function ensureBinfmt(arch: string): Promise<string[]> {
  const before = binfmtStatus(arch);
  if (before.ok) return [];
  const name = `qemu-${QEMU_ARCH[arch] ?? arch}`;
  const hint =
    "install qemu-user-static with `kiln doctor --install`; `kiln doctor` shows the state";
  if (!before.line)
    throw new KilnError("BINFMT_MISSING", `running ${arch} programs needs qemu-user-static`, {
      hint,
    });
  // An entry someone else made (disabled, or without F) is theirs: kiln does not replace it.
  if (before.entry)
    throw new KilnError("BINFMT_MISSING", `${before.note}`, {
      hint: `enable it with the F flag (e.g. \`echo -1 > ${BINFMT_DIR}/${name}\` and register ${confFile(arch)}), or run \`update-binfmts --enable ${name}\``,
    });
  const changed: string[] = [];
  // Another kiln may be doing the same at this moment: what it did first is no failure.
  if (!before.mounted) {
    const r = await exec("mount", ["-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR], {
      hint,
      okCodes: [0, 32],
    });
    if (r.code === 0) changed.push(`mounted binfmt_misc on ${BINFMT_DIR}`);
    else if (!binfmtStatus(arch).mounted)
      throw new KilnError("BINFMT_MISSING", `cannot mount binfmt_misc: ${r.stderr.trim()}`, {
        hint,
      });
  }
  // The kernel decodes the \x escapes of the line itself.
  const line = before.line.includes("F", before.line.lastIndexOf(":"))
    ? before.line
    : `${before.line}F`;
  try {
    await writeFile(`${BINFMT_DIR}/register`, line);
    changed.push(
      `registered ${name} (flags ${line.slice(line.lastIndexOf(":") + 1)}) from ${confFile(arch)}`,
    );
  } catch (err) {
    // EEXIST: registered by someone else meanwhile; fine if it works.
    if (!binfmtStatus(arch).ok) throw err;
  }
  const after = binfmtStatus(arch);
  if (!after.ok)
    throw new KilnError("BINFMT_MISSING", `registering ${name} did not take: ${after.note}`, {
      hint,
    });
  return changed;
}
