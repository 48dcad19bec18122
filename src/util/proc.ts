import { readdirSync, readFileSync } from "node:fs";

/**
 * Process-tree helpers over /proc. Programs such as `script` or QEMU helpers
 * may exit before their own children do; kiln must wait for the whole tree,
 * because a child still running holds mounts and loop devices.
 */

/** The direct children of a process. */
export function children(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tasks) {
    try {
      const list = readFileSync(`/proc/${pid}/task/${t}/children`, "utf8").trim();
      if (list) out.push(...list.split(/\s+/).map(Number));
    } catch {}
  }
  return out;
}

/** Every process below `pid`, parents before children. */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = children(pid);
  while (queue.length > 0) {
    const p = queue.shift()!;
    out.push(p);
    queue.push(...children(p));
  }
  return out;
}

/** The command name of a process, or undefined once it is gone. */
export function commOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return undefined;
  }
}

/**
 * Still running? A zombie has already released its mounts, files and
 * namespaces, so it counts as gone (its reaper may be slow, or absent in a
 * sandbox whose pid 1 does not reap).
 */
export function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

export function signal(pids: number[], sig: NodeJS.Signals): void {
  for (const p of pids) {
    try {
      process.kill(p, sig);
    } catch {}
  }
}

/** Wait until none of `pids` runs; true if they all went within `ms`. */
export async function waitGone(pids: number[], ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (!pids.some(running)) return true;
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}
