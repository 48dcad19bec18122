import { existsSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exec } from "../util/exec.js";
import { writeJsonAtomic } from "../util/fsx.js";
import { cacheDir } from "../util/paths.js";
import { stripAnsi } from "./console.js";

export type Accel = "kvm" | "tcg";

export interface AccelProbe {
  usable: Accel;
  kvm: "works" | "broken" | "absent" | "untested";
  reason: string;
  probedAt: string;
}

/** How the probe boots a kernel; injectable so both outcomes can be unit-tested. */
export type BootKernel = (kernel: string, timeoutMs: number) => Promise<string>;

/**
 * /dev/kvm can exist and still hang guests (nested or broken hosts), so the
 * only honest test is to boot something: a real kernel with no root disk. It
 * panics ("VFS: Unable to mount root") within a second or two under working
 * KVM; a broken KVM never gets that far.
 */
export async function probeKvm(
  opts: { kernel?: string; boot?: BootKernel; timeoutMs?: number } = {},
): Promise<AccelProbe> {
  const probedAt = new Date().toISOString();
  if (!opts.boot && !existsSync("/dev/kvm"))
    return { usable: "tcg", kvm: "absent", reason: "/dev/kvm does not exist", probedAt };
  const kernel = opts.kernel ?? (await findProbeKernel());
  if (!kernel)
    return {
      usable: "tcg",
      kvm: "untested",
      reason: "no kernel to probe with yet (build an image first)",
      probedAt,
    };
  const boot = opts.boot ?? qemuBootKernel;
  let console = "";
  try {
    console = await boot(kernel, opts.timeoutMs ?? 20_000);
  } catch (err) {
    console = String((err as { stdout?: string }).stdout ?? err);
  }
  if (/Kernel panic|VFS: Unable to mount root|Run \/init/.test(console)) {
    return { usable: "kvm", kvm: "works", reason: "a test kernel booted under KVM", probedAt };
  }
  const last = stripAnsi(console).trim().split("\n").slice(-1)[0] ?? "";
  return {
    usable: "tcg",
    kvm: "broken",
    reason: `a test kernel did not boot under KVM (last line: ${last.trim().slice(0, 80) || "none"})`,
    probedAt,
  };
}

/** The cached probe result, made once per host kernel and QEMU. */
export async function kvmStatus(refresh = false): Promise<AccelProbe> {
  const file = cacheDir("accel.json");
  const host = (await readFile("/proc/sys/kernel/osrelease", "utf8").catch(() => "")).trim();
  if (!refresh && existsSync(file)) {
    const c = JSON.parse(await readFile(file, "utf8")) as AccelProbe & { host?: string };
    if (c.host === host && c.kvm !== "untested") return c;
  }
  const r = await probeKvm();
  await mkdir(cacheDir(), { recursive: true });
  await writeJsonAtomic(file, { ...r, host });
  return r;
}

const qemuBootKernel: BootKernel = async (kernel, timeoutMs) => {
  const r = await exec(
    "qemu-system-x86_64",
    [
      "-accel",
      "kvm",
      "-machine",
      "q35",
      "-m",
      "256",
      "-nodefaults",
      "-nographic",
      "-no-reboot",
      "-serial",
      "stdio",
      "-kernel",
      kernel,
      "-append",
      "console=ttyS0 panic=-1",
    ],
    { timeoutMs, okCodes: [0, 1] },
  ).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? "" }));
  return r.stdout;
};

/** A kernel from the host's /boot, or one unpacked from a cached kernel .deb. */
async function findProbeKernel(): Promise<string | undefined> {
  const host = existsSync("/boot")
    ? readdirSync("/boot").filter((f) => f.startsWith("vmlinuz-"))
    : [];
  if (host[0]) return join("/boot", host[0]);
  const apt = cacheDir("apt");
  if (!existsSync(apt)) return undefined;
  for (const d of readdirSync(apt)) {
    // Only the host's own architecture: the cache holds arm64 kernels too, which KVM here cannot boot.
    const deb = readdirSync(join(apt, d)).find((f) => /^linux-image-\d.*_amd64\.deb$/.test(f));
    if (!deb) continue;
    const dir = await mkdtemp(join(tmpdir(), "kiln-probe-"));
    try {
      await exec("sh", [
        "-c",
        'dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards "./boot/vmlinuz-*"',
        "sh",
        join(apt, d, deb),
        dir,
      ]);
      const k = readdirSync(join(dir, "boot"))[0];
      if (!k) continue;
      const keep = cacheDir("probe-vmlinuz");
      await exec("cp", [join(dir, "boot", k), keep]);
      return keep;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  return undefined;
}
