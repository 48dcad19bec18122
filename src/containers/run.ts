import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import {
  createReadStream,
  createWriteStream,
  existsSync,
  constants as fsc,
  lstatSync,
} from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { constants, tmpdir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { overlayDir } from "../runtime/ephemeral.js";
import { NSPAWN_BASE } from "../runtime/nspawn.js";
import { ensureBinfmt } from "../util/binfmt.js";
import { onCleanup } from "../util/cleanup.js";
import { KilnError } from "../util/errors.js";
import { ExecError, exec } from "../util/exec.js";
import { removeTree } from "../util/fsx.js";
import { log as kilnLog } from "../util/log.js";
import { shellQuote } from "../util/shell.js";
import {
  type ContainerRecord,
  claimName,
  containerDir,
  containerLog,
  endNspawn,
  writeContainer,
} from "./instances.js";
import { pullable } from "./pull.js";
import { findImage, type ImageRef, imageRootfs, refText } from "./store.js";

export interface RunOptions {
  image: ImageRef;
  command: string[];
  interactive?: boolean;
  tty?: boolean;
  name?: string;
  env?: string[];
  volumes?: string[];
  workdir?: string;
  boot?: boolean;
  /** Remove the container (layers, log, record) when it exits. */
  rm?: boolean;
  /** This process supervises a `run -d`: the container's output goes only to its log. */
  detached?: boolean;
  /** The name was claimed already (by the `run -d` that started this supervisor). */
  claimed?: boolean;
  /** Receive the command's stdout here instead of on kiln's stdout (kiln probe). */
  onStdout?: (chunk: Buffer) => void;
}

const PATH_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/** Is `cmd` an executable inside the image, as docker resolves it (PATH, or a path)? */
export function resolvesInImage(rootfs: string, cmd: string): boolean {
  const exists = (p: string) => {
    try {
      lstatSync(join(rootfs, p));
      return true;
    } catch {
      return false;
    }
  };
  if (cmd.includes("/")) return exists(isAbsolute(cmd) ? cmd : join("/", cmd));
  return PATH_DIRS.some((d) => exists(join(d, cmd)));
}

/** HOST:GUEST[:ro] → nspawn's bind option; the host side must exist. */
export function bindArg(spec: string): string {
  const parts = spec.split(":");
  const ro = parts.length === 3 && parts[2] === "ro";
  if (
    parts.length < 2 ||
    parts.length > 3 ||
    (parts.length === 3 && !["ro", "rw"].includes(parts[2]!))
  )
    throw new KilnError("RUN_VOLUME", `invalid volume specification: '${spec}'`, {
      hint: "use -v HOST:GUEST[:ro]",
      exitCode: 125,
    });
  const host = resolve(parts[0]!);
  if (!existsSync(host))
    throw new KilnError(
      "RUN_VOLUME",
      `invalid mount config for type "bind": bind source path does not exist: ${host}`,
      { exitCode: 125 },
    );
  if (!isAbsolute(parts[1]!))
    throw new KilnError(
      "RUN_VOLUME",
      `invalid mount path: '${parts[1]}' mount path must be absolute`,
      {
        exitCode: 125,
      },
    );
  return `--bind${ro ? "-ro" : ""}=${host}:${parts[1]}`;
}

/** What a run needs that can be checked before anything is made: the image, the command, the binds. */
export function prepareRun(o: RunOptions): { rootfs: string; command: string[]; binds: string[] } {
  const image = findImage(o.image);
  if (!image)
    throw new KilnError(
      "RUN_NO_IMAGE",
      `Unable to find image '${refText(o.image)}'${o.image.arch ? ` for linux/${o.image.arch}` : ""} locally`,
      {
        hint: `kiln pull ${o.image.arch ? `--platform linux/${o.image.arch} ` : ""}${pullable(o.image) ? refText(o.image) : `docker://${refText(o.image)} (or oci:DIR:TAG)`}`,
        exitCode: 125,
      },
    );
  const rootfs = imageRootfs(o.image);
  const command = o.command.length ? o.command : (image.config?.cmd ?? ["/bin/bash"]);
  if (!resolvesInImage(rootfs, command[0]!))
    throw new KilnError(
      "RUN_NOT_FOUND",
      `exec: "${command[0]}": executable file not found in $PATH`,
      { exitCode: 127 },
    );
  return { rootfs, command, binds: (o.volumes ?? []).map(bindArg) };
}

export function defaultName(ref: ImageRef): string {
  const base = ref.name
    .split("/")
    .pop()!
    .replace(/[^a-zA-Z0-9_.-]/g, "-");
  return `${base}-${randomBytes(3).toString("hex")}`;
}

/**
 * `kiln run`: an nspawn container on an overlay of a stored image, kept in
 * the store (its changes, log and exit status) until `kiln rm`, or removed
 * on exit with --rm. Without --boot the command runs under nspawn's stub init
 * (--as-pid2), which reaps and forwards signals as docker's --init does; with
 * --boot systemd is PID 1 and the command runs as a unit whose exit status
 * becomes the container's. Returns the command's exit status.
 */
export async function runContainer(o: RunOptions): Promise<number> {
  const { rootfs, command, binds } = prepareRun(o);
  const image = findImage(o.image)!;
  // Another architecture's programs run through qemu-user (binfmt_misc's F flag: nothing is copied in).
  if (image.arch) for (const c of await ensureBinfmt(image.arch)) kilnLog.warn(`host: ${c}`);
  const name = o.name ?? defaultName(o.image);
  if (!o.claimed) await claimName(name);
  const rec: ContainerRecord = {
    name,
    image: refText(o.image),
    command,
    boot: !!o.boot,
    created: new Date().toISOString(),
    status: "running",
    pid: process.pid,
    autoRemove: !!o.rm,
  };
  // Interrupted, the container still ends as a record (or, with --rm, not at all).
  let code = 130;
  const finish = async () => {
    if (o.rm) return removeTree(containerDir(name));
    await writeContainer({
      ...rec,
      status: "exited",
      exitCode: code,
      finished: new Date().toISOString(),
    });
  };
  const dropFinish = onCleanup(`container ${name}`, finish);
  await writeContainer(rec);
  const log = createWriteStream(containerLog(name), { flags: "a" });
  const output = (chunk: Buffer, stream: "stdout" | "stderr") => {
    const b = stream === "stderr" ? withoutNspawnNoise(chunk) : chunk;
    if (!b.length) return;
    log.write(b);
    if (o.detached) return;
    if (stream === "stdout" && o.onStdout) o.onStdout(b);
    else (stream === "stdout" ? process.stdout : process.stderr).write(b);
  };
  let relay: Awaited<ReturnType<typeof stdioRelay>> | undefined;
  const env = [...(image.config?.env ?? []), ...(o.env ?? [])];
  const workdir = o.workdir ?? image.config?.workdir;
  let overlay: Awaited<ReturnType<typeof overlayDir>> | undefined;
  let keys: ReturnType<typeof doubleCtrlC> | undefined;
  // The record with nspawn's pid, written while the container runs; finish() must not race it.
  let noted: Promise<void> = Promise.resolve();
  try {
    if (o.boot && !o.tty) relay = await stdioRelay(!!o.interactive && !o.detached, output);
    overlay = await overlayDir(
      rootfs,
      o.boot ? bootInjection(command, !!o.tty, !!o.interactive) : [],
      containerDir(name),
    );
    const args = [
      ...NSPAWN_BASE,
      `--hostname=${name}`,
      "-D",
      overlay.path,
      `--console=${o.tty ? "interactive" : "pipe"}`,
      ...binds,
      ...env.map((e) => `--setenv=${e.includes("=") ? e : `${e}=${process.env[e] ?? ""}`}`),
      ...(workdir ? [`--chdir=${workdir}`] : []),
      ...(relay ? [`--bind=${relay.dir}:${RELAY_MOUNT}`] : []),
    ];
    if (o.boot) args.push("-b", "systemd.show_status=false", "systemd.log_level=warning");
    else args.push("--as-pid2", "--", ...command);
    const terminal = !!o.tty && !o.detached && process.stdin.isTTY;
    const r = await exec("systemd-nspawn", args, {
      inherit: true,
      stdin: (o.interactive || o.tty) && !relay && !o.detached ? "inherit" : "ignore",
      ...(o.tty ? {} : { onData: output }),
      stdinPipe: terminal,
      okCodes: Array.from({ length: 256 }, (_, i) => i),
      onSpawn: (child) => {
        rec.nspawnPid = child.pid;
        noted = writeContainer(rec).catch(() => {});
        if (terminal) keys = doubleCtrlC(child);
      },
    }).catch((err) => {
      // Killed (kiln stop after its grace period, or a second Ctrl-C): 128 + signal, as a shell says it.
      if (err instanceof ExecError && err.signal)
        return { code: 128 + constants.signals[err.signal] };
      throw err;
    });
    await relay?.finish();
    code = r.code;
    return code;
  } finally {
    keys?.dispose();
    await relay?.dispose();
    await overlay?.dispose();
    await new Promise((res) => log.end(res));
    await noted;
    dropFinish();
    await finish();
  }
}

/**
 * nspawn shares the container's stderr and says these on `kiln stop` and,
 * on hosts whose /run is not a tmpfs, on every exit: about nspawn and the
 * host, not the container.
 */
const NSPAWN_NOISE =
  /^(?:Attempted to remove disk file system under "\/run\/systemd\/nspawn\/propagate\/|Trying to halt container\. Send SIGTERM again)[^\n]*\n?/gm;

function withoutNspawnNoise(b: Buffer): Buffer {
  const text = b.toString("utf8");
  if (!/Attempted to remove disk file system|Trying to halt container/.test(text)) return b;
  return Buffer.from(text.replace(NSPAWN_NOISE, ""));
}

/**
 * `run -it`: the terminal is kiln's, in raw mode, and every key goes on to
 * nspawn, so Ctrl-C reaches the container's foreground process as it would
 * at a console. A second Ctrl-C within two seconds ends the container, for
 * the command that ignores the first.
 */
function doubleCtrlC(child: ChildProcess) {
  const stdin = process.stdin;
  stdin.setRawMode(true);
  let last = 0;
  const onData = (b: Buffer) => {
    if (b.includes(3)) {
      const now = Date.now();
      if (now - last < 2000 && child.pid) {
        process.stderr.write("\r\nkiln: second Ctrl-C, ending the container\r\n");
        void endNspawn(child.pid, 3000);
      }
      last = now;
    }
    child.stdin?.write(b);
  };
  stdin.on("data", onData);
  stdin.resume();
  return {
    dispose() {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
    },
  };
}

const RELAY_MOUNT = "/run/kiln-run-io";

/**
 * --boot without a terminal: systemd as PID 1 points its own stdio at
 * /dev/null, so the command's unit cannot reach nspawn's pipes. Instead it
 * gets FIFOs bind-mounted from the host, which kiln copies to and from its
 * own stdin, stdout and stderr.
 */
async function stdioRelay(
  interactive: boolean,
  output: (b: Buffer, stream: "stdout" | "stderr") => void,
) {
  const dir = await mkdtemp(join(tmpdir(), "kiln-run-io-"));
  const fifos = ["out", "err", ...(interactive ? ["in"] : [])].map((f) => join(dir, f));
  await exec("mkfifo", ["-m", "600", ...fifos]);
  const copied = [
    once(
      createReadStream(join(dir, "out")).on("data", (b) => output(b as Buffer, "stdout")),
      "close",
    ),
    once(
      createReadStream(join(dir, "err")).on("data", (b) => output(b as Buffer, "stderr")),
      "close",
    ),
  ];
  if (interactive) process.stdin.pipe(createWriteStream(join(dir, "in")).on("error", () => {}));
  // Opens still waiting for the other end (the unit never ran, or read no
  // stdin) are released by opening that end once ourselves.
  const release = async () => {
    for (const [f, flags] of [
      ["out", fsc.O_WRONLY | fsc.O_NONBLOCK],
      ["err", fsc.O_WRONLY | fsc.O_NONBLOCK],
      ["in", fsc.O_RDONLY | fsc.O_NONBLOCK],
    ] as const)
      await open(join(dir, f), flags).then(
        (h) => h.close(),
        () => {},
      );
  };
  return {
    dir,
    async finish() {
      process.stdin.unpipe();
      await release();
      await Promise.all(copied);
    },
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}

/**
 * For --boot: a unit that runs the command once the system is up. systemd
 * then exits (an orderly shutdown), passing the command's exit status on as
 * its own, which is nspawn's. On a terminal the command gets the console;
 * otherwise it gets kiln's stdio through FIFOs (see stdioRelay).
 */
function bootInjection(command: string[], tty: boolean, interactive: boolean) {
  const quoted = command.map(shellQuote).join(" ");
  const io = tty
    ? "StandardInput=tty-force\nStandardOutput=tty\nStandardError=tty\nTTYPath=/dev/console"
    : `StandardInput=${interactive ? `file:${RELAY_MOUNT}/in` : "null"}\nStandardOutput=file:${RELAY_MOUNT}/out\nStandardError=file:${RELAY_MOUNT}/err`;
  return [
    { path: "/usr/lib/kiln-run/run.sh", content: `#!/bin/sh\nexec ${quoted}\n`, mode: 0o755 },
    {
      path: "/etc/systemd/system/kiln-run.service",
      content: `[Unit]
Description=kiln run command
After=multi-user.target
SuccessAction=exit
FailureAction=exit

[Service]
Type=oneshot
${io}
ExecStart=/bin/sh /usr/lib/kiln-run/run.sh
`,
    },
    {
      path: "/etc/systemd/system/multi-user.target.wants/kiln-run.service",
      linkTo: "/etc/systemd/system/kiln-run.service",
    },
  ];
}
