import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { KilnError } from "../util/errors.js";
import { removeTree, unmount, writeJsonAtomic } from "../util/fsx.js";
import { storeDir } from "../util/paths.js";
import { children, commOf, descendants, running, signal, waitGone } from "../util/proc.js";

/**
 * The containers `kiln run` made. Each has a directory in the store holding
 * its record, its overlay layers (so a kept container keeps its changes) and
 * its log. The record names the kiln process that supervises the container
 * and the systemd-nspawn below it; `kiln stop` signals nspawn, and the
 * supervisor notes the exit status and unmounts.
 */
export interface ContainerRecord {
  name: string;
  image: string;
  command: string[];
  boot: boolean;
  created: string;
  status: "created" | "running" | "exited";
  /** The supervising kiln process. */
  pid?: number;
  nspawnPid?: number;
  exitCode?: number;
  finished?: string;
  /** --rm: the supervisor removes the container when it exits. */
  autoRemove: boolean;
}

export const containerDir = (name: string, ...parts: string[]) =>
  storeDir("containers", name, ...parts);

export const containerLog = (name: string) => containerDir(name, "log");

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

export function checkName(name: string): void {
  if (!NAME.test(name))
    throw new KilnError(
      "RUN_NAME",
      `Invalid container name (${name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`,
      { exitCode: 125 },
    );
}

/** Take a name: the directory is made atomically, so two runs cannot share one. */
export async function claimName(name: string): Promise<void> {
  checkName(name);
  await mkdir(storeDir("containers"), { recursive: true });
  try {
    await mkdir(containerDir(name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    throw new KilnError(
      "RUN_NAME_IN_USE",
      `Conflict. The container name "${name}" is already in use`,
      { hint: `kiln rm ${name}, or pick another --name`, exitCode: 125 },
    );
  }
}

export function readContainer(name: string): ContainerRecord | undefined {
  try {
    return JSON.parse(readFileSync(containerDir(name, "container.json"), "utf8"));
  } catch {
    return undefined;
  }
}

/** Written whole and renamed, so `kiln ps` never reads half a record. */
export async function writeContainer(rec: ContainerRecord): Promise<void> {
  const f = containerDir(rec.name, "container.json");
  await writeJsonAtomic(f, rec);
}

export function mustFind(name: string): ContainerRecord {
  const rec = readContainer(name);
  if (!rec)
    throw new KilnError("NO_CONTAINER", `No such container: ${name}`, {
      hint: "kiln ps -a lists them",
      exitCode: 1,
    });
  return rec;
}

/** Running means its supervisor is alive; a supervisor killed outright leaves a "running" record behind. */
export function isRunning(rec: ContainerRecord): boolean {
  return rec.status !== "exited" && rec.pid !== undefined && running(rec.pid);
}

export function listContainers(): ContainerRecord[] {
  const root = storeDir("containers");
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((n) => readContainer(n))
    .filter((r): r is ContainerRecord => !!r)
    .sort((a, b) => b.created.localeCompare(a.created));
}

function ago(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} second${s === 1 ? "" : "s"}`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} minute${m === 1 ? "" : "s"}`;
  const h = Math.round(m / 60);
  if (h < 48) return `${h} hour${h === 1 ? "" : "s"}`;
  return `${Math.round(h / 24)} days`;
}

/** Docker's wording: "Up 3 minutes", "Exited (3) 2 hours ago". */
export function statusText(rec: ContainerRecord, now = Date.now()): string {
  if (isRunning(rec)) return `Up ${ago(rec.created, now)}`;
  if (rec.status === "exited")
    return `Exited (${rec.exitCode}) ${ago(rec.finished ?? rec.created, now)} ago`;
  return "Dead (its kiln process is gone)";
}

/**
 * Ask the container to stop: SIGTERM to nspawn, which passes an orderly
 * shutdown on (SIGRTMIN+3 to systemd with --boot, SIGTERM to the command
 * otherwise); after `graceMs` everything below nspawn is killed. Returns once
 * the supervisor has recorded the exit and unmounted.
 */
export async function stopContainer(name: string, graceMs = 10_000): Promise<void> {
  const rec = mustFind(name);
  if (!isRunning(rec)) return;
  const nspawn = rec.nspawnPid;
  if (nspawn && running(nspawn)) {
    if (rec.boot) await endNspawn(nspawn, graceMs);
    else {
      // nspawn's stub init passes no SIGTERM on, so the command gets it from here, as from docker stop.
      const stub = descendants(nspawn).find((p) => commOf(p) === "(sd-stubinit)");
      signal(stub ? children(stub) : [], "SIGTERM");
      if (!(await waitGone([nspawn], graceMs))) await endNspawn(nspawn, 0);
    }
  } else if (rec.pid) process.kill(rec.pid, "SIGTERM");
  if (rec.pid && !(await waitGone([rec.pid], 15_000)))
    throw new KilnError("STOP_TIMEOUT", `${name}: its kiln process ${rec.pid} did not finish`);
}

/**
 * SIGTERM to nspawn: with --boot an orderly shutdown (SIGRTMIN+3 to
 * systemd), otherwise nspawn kills the container. After `graceMs`, SIGKILL to all of it.
 */
export async function endNspawn(pid: number, graceMs: number): Promise<void> {
  signal([pid], "SIGTERM");
  if (!(await waitGone([pid], graceMs))) {
    signal([pid, ...descendants(pid)], "SIGKILL");
    await waitGone([pid], 5000);
  }
}

/** Remove a stopped container: its layers, log and record (and a mount a killed supervisor left). */
export async function removeContainer(name: string, force = false): Promise<void> {
  const rec = mustFind(name);
  if (isRunning(rec)) {
    if (!force)
      throw new KilnError(
        "RM_RUNNING",
        `You cannot remove a running container ${name}. Stop the container before attempting removal or force remove`,
        { hint: `kiln stop ${name}, or kiln rm -f ${name}`, exitCode: 1 },
      );
    await stopContainer(name, 0);
  }
  const merged = containerDir(name, "merged");
  if (existsSync(merged)) await unmount(merged);
  await removeTree(containerDir(name));
}
