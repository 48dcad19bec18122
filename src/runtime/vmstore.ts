import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { resolve } from "node:path";
import { seedIso } from "../image/cidata.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
import { writeJsonAtomic } from "../util/fsx.js";
import { storeDir } from "../util/paths.js";
import { running } from "../util/proc.js";

/**
 * Named VMs (`kiln vm --name N`): a qcow2 overlay over the artifact, the
 * seed it was first given and its UEFI variables, kept in STORE/vms/N until
 * `kiln vm rm N --purge`. The artifact itself is never written.
 */
export interface NamedVm {
  name: string;
  /** The artifact the overlay is backed by, and what it looked like then. */
  image: string;
  imageSize: number;
  imageMtime: number;
  created: string;
  /** pid of the kiln process running it, while it runs. */
  pid?: number;
}

export const vmDir = (name: string, ...parts: string[]) => storeDir("vms", name, ...parts);

export function findNamedVm(name: string): NamedVm | undefined {
  const f = vmDir(name, "vm.json");
  return existsSync(f) ? (JSON.parse(readFileSync(f, "utf8")) as NamedVm) : undefined;
}

export function isRunning(vm: NamedVm): boolean {
  return vm.pid !== undefined && running(vm.pid);
}

export function listNamedVms(): (NamedVm & { running: boolean; bytes: number })[] {
  const dir = storeDir("vms");
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((n) => findNamedVm(n))
    .filter((v): v is NamedVm => !!v)
    .map((v) => ({
      ...v,
      running: isRunning(v),
      bytes: existsSync(vmDir(v.name, "disk.qcow2"))
        ? statSync(vmDir(v.name, "disk.qcow2")).blocks * 512
        : 0,
    }));
}

async function save(vm: NamedVm): Promise<void> {
  await writeJsonAtomic(vmDir(vm.name, "vm.json"), vm);
}

/**
 * The disk, seed and variable store to boot a named VM with, made on first
 * use. A later run may leave the image out; naming another one, or an image
 * rebuilt since, is refused (the overlay would no longer match what it is
 * layered on).
 */
export async function openNamedVm(
  name: string,
  image: string | undefined,
  seed: string | undefined,
): Promise<{ disk: string; seed?: string; vars: string; release(): Promise<void> }> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name))
    throw new KilnError("USAGE", `"${name}" is not a usable VM name`, { exitCode: 2 });
  let vm = findNamedVm(name);
  if (vm && isRunning(vm))
    throw new KilnError("VM_RUNNING", `VM ${name} is already running (pid ${vm.pid})`);
  if (vm) {
    if (image && resolve(image) !== vm.image)
      throw new KilnError(
        "VM_NAME_TAKEN",
        `VM ${name} was made from ${vm.image}, not ${resolve(image)}`,
        {
          hint: `leave the image out to start it again, or \`kiln vm rm ${name} --purge\` first`,
        },
      );
    const st = existsSync(vm.image) ? statSync(vm.image) : undefined;
    if (!st || st.size !== vm.imageSize || Math.round(st.mtimeMs) !== vm.imageMtime)
      throw new KilnError(
        "VM_IMAGE_CHANGED",
        `${vm.image} ${st ? "changed" : "is gone"} since VM ${name} was made on it; its overlay no longer fits`,
        { hint: `\`kiln vm rm ${name} --purge\` and start afresh` },
      );
  } else {
    if (!image)
      throw new KilnError("VM_NOT_FOUND", `there is no VM named ${name}`, {
        hint: `make it with \`kiln vm IMAGE --name ${name}\``,
      });
    if (!existsSync(image)) throw new KilnError("VM_NO_IMAGE", `${image} does not exist`);
    const abs = resolve(image);
    const st = statSync(abs);
    await mkdir(vmDir(name), { recursive: true });
    const format = abs.endsWith(".qcow2") ? "qcow2" : "raw";
    await exec("qemu-img", [
      "create",
      "-q",
      "-f",
      "qcow2",
      "-F",
      format,
      "-b",
      abs,
      vmDir(name, "disk.qcow2"),
    ]);
    vm = {
      name,
      image: abs,
      imageSize: st.size,
      imageMtime: Math.round(st.mtimeMs),
      created: new Date().toISOString(),
    };
  }
  if (seed) {
    // Kept with the VM, so a later start finds it even after the original is gone.
    const iso = await seedIso(seed, vmDir(name));
    if (iso !== vmDir(name, "seed.iso")) await copyFile(iso, vmDir(name, "seed.iso"));
  }
  const record = { ...vm, pid: process.pid };
  await save(record);
  const seedPath = vmDir(name, "seed.iso");
  return {
    disk: vmDir(name, "disk.qcow2"),
    ...(existsSync(seedPath) ? { seed: seedPath } : {}),
    vars: vmDir(name, "vars.fd"),
    release: async () => {
      const now = findNamedVm(name);
      if (now?.pid === process.pid) {
        delete now.pid;
        await save(now);
      }
    },
  };
}

/** Delete a named VM's overlay, seed and variables; only with purge, never while it runs. */
export async function removeNamedVm(name: string, purge: boolean): Promise<void> {
  const vm = findNamedVm(name);
  if (!vm && !existsSync(vmDir(name)))
    throw new KilnError("VM_NOT_FOUND", `there is no VM named ${name}`);
  if (vm && isRunning(vm))
    throw new KilnError("VM_RUNNING", `VM ${name} is running (pid ${vm.pid}); stop it first`);
  if (!purge)
    throw new KilnError(
      "USAGE",
      `removing VM ${name} deletes its disk overlay (everything it wrote)`,
      {
        hint: `say so with \`kiln vm rm ${name} --purge\``,
        exitCode: 2,
      },
    );
  await rm(vmDir(name), { recursive: true, force: true });
}
