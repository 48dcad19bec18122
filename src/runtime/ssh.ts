import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { writeJsonAtomic } from "../util/fsx.js";
import { cacheDir } from "../util/paths.js";
import { running } from "../util/proc.js";

export interface VmRecord {
  name: string;
  port: number;
  key: string;
  pid: number;
  image: string;
}

/** kiln's own SSH key for VMs it starts; made once. */
export async function vmKey(): Promise<{ key: string; pub: string }> {
  const dir = cacheDir("ssh");
  const key = join(dir, "id_ed25519");
  if (!existsSync(key)) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await exec("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "kiln", "-f", key]);
  }
  return { key, pub: (await readFile(`${key}.pub`, "utf8")).trim() };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (typeof a === "object" && a ? resolve(a.port) : reject(new Error("no port"))));
    });
  });
}

/** Note a running VM so `kiln ssh NAME` can find it; the note goes when this process ends. */
export async function recordVm(rec: VmRecord): Promise<() => Promise<void>> {
  const dir = cacheDir("vms");
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${rec.name}.json`);
  if (existsSync(file)) {
    const old = JSON.parse(await readFile(file, "utf8")) as VmRecord;
    if (running(old.pid))
      throw new KilnError(
        "VM_NAME_IN_USE",
        `a VM named ${rec.name} is already running (pid ${old.pid})`,
        { hint: "pick another --name" },
      );
  }
  await writeJsonAtomic(file, rec);
  const remove = () => rm(file, { force: true });
  const drop = onCleanup(`VM record ${file}`, remove);
  return async () => {
    drop();
    await remove();
  };
}

export async function findVm(name?: string): Promise<VmRecord> {
  const dir = cacheDir("vms");
  const files = existsSync(dir) ? (await readdir(dir)).filter((f) => f.endsWith(".json")) : [];
  const live: VmRecord[] = [];
  for (const f of files) {
    const r = JSON.parse(await readFile(join(dir, f), "utf8")) as VmRecord;
    if (running(r.pid)) live.push(r);
    else await rm(join(dir, f), { force: true });
  }
  if (name) {
    const r = live.find((x) => x.name === name);
    if (!r)
      throw new KilnError("SSH_NO_VM", `no running VM named ${name}`, {
        hint: "start one with `kiln vm IMAGE --ssh --name NAME`",
      });
    return r;
  }
  if (live.length === 1) return live[0]!;
  if (!live.length)
    throw new KilnError("SSH_NO_VM", "no VM started with --ssh is running", {
      hint: "start one with `kiln vm IMAGE --ssh`",
    });
  throw new KilnError(
    "SSH_WHICH_VM",
    `several VMs are running: ${live.map((r) => r.name).join(", ")}`,
    { hint: "name one: kiln ssh NAME" },
  );
}

export function sshArgs(r: VmRecord, user: string, command: string[]): string[] {
  return [
    "-i",
    r.key,
    "-p",
    String(r.port),
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
    `${user}@127.0.0.1`,
    ...command,
  ];
}
