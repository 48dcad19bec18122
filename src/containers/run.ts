import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { constants, createReadStream, createWriteStream, existsSync, lstatSync } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { overlayDir } from "../runtime/ephemeral.js";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";
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
  /** --boot without a terminal: receive the command's stdout here instead of kiln's stdout. */
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

/**
 * `kiln run`: an nspawn container on a throw-away overlay of a stored image.
 * Without --boot the command runs under nspawn's stub init (--as-pid2), which
 * reaps and forwards signals as docker's --init does; with --boot systemd is
 * PID 1 and the command runs as a unit whose exit status becomes the
 * container's. Returns the command's exit status.
 */
export async function runContainer(o: RunOptions): Promise<number> {
  const image = findImage(o.image);
  if (!image)
    throw new KilnError("RUN_NO_IMAGE", `Unable to find image '${refText(o.image)}' locally`, {
      hint: pullable(o.image)
        ? `kiln pull ${refText(o.image)}`
        : `kiln cannot pull ${o.image.name} itself; pull docker://… or oci:DIR:TAG`,
      exitCode: 125,
    });
  const rootfs = imageRootfs(o.image);
  const command = o.command.length ? o.command : ["/bin/bash"];
  if (!resolvesInImage(rootfs, command[0]!))
    throw new KilnError(
      "RUN_NOT_FOUND",
      `exec: "${command[0]}": executable file not found in $PATH`,
      { exitCode: 127 },
    );
  const binds = (o.volumes ?? []).map(bindArg);
  const name = o.name ?? `kiln-${randomBytes(4).toString("hex")}`;
  const relay = o.boot && !o.tty ? await stdioRelay(!!o.interactive, o.onStdout) : undefined;
  const overlay = await overlayDir(
    rootfs,
    o.boot ? bootInjection(command, !!o.tty, !!o.interactive) : [],
  );
  try {
    const args = [
      "--register=no",
      "--keep-unit",
      "-q",
      `--hostname=${name}`,
      "-D",
      overlay.path,
      `--console=${o.tty ? "interactive" : "pipe"}`,
      ...binds,
      ...(o.env ?? []).map(
        (e) => `--setenv=${e.includes("=") ? e : `${e}=${process.env[e] ?? ""}`}`,
      ),
      ...(o.workdir ? [`--chdir=${o.workdir}`] : []),
      ...(relay ? [`--bind=${relay.dir}:${RELAY_MOUNT}`] : []),
    ];
    if (o.boot) args.push("-b", "systemd.show_status=false", "systemd.log_level=warning");
    else args.push("--as-pid2", "--", ...command);
    const r = await exec("systemd-nspawn", args, {
      inherit: true,
      stdin: (o.interactive || o.tty) && !relay ? "inherit" : "ignore",
      okCodes: Array.from({ length: 256 }, (_, i) => i),
    });
    await relay?.finish();
    return r.code;
  } finally {
    await relay?.dispose();
    await overlay.dispose();
  }
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
  onStdout: (b: Buffer) => void = (b) => process.stdout.write(b),
) {
  const dir = await mkdtemp(join(tmpdir(), "kiln-run-io-"));
  const fifos = ["out", "err", ...(interactive ? ["in"] : [])].map((f) => join(dir, f));
  await exec("mkfifo", ["-m", "600", ...fifos]);
  const copied = [
    once(
      createReadStream(join(dir, "out")).on("data", (b) => onStdout(b as Buffer)),
      "close",
    ),
    once(
      createReadStream(join(dir, "err")).on("data", (b) => process.stderr.write(b)),
      "close",
    ),
  ];
  if (interactive) process.stdin.pipe(createWriteStream(join(dir, "in")).on("error", () => {}));
  // Opens still waiting for the other end (the unit never ran, or read no
  // stdin) are released by opening that end once ourselves.
  const release = async () => {
    for (const [f, flags] of [
      ["out", constants.O_WRONLY | constants.O_NONBLOCK],
      ["err", constants.O_WRONLY | constants.O_NONBLOCK],
      ["in", constants.O_RDONLY | constants.O_NONBLOCK],
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
  const quoted = command.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
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
