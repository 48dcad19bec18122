import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { onCleanup } from "./cleanup.js";
import { KilnError, ToolMissingError } from "./errors.js";
import { debugEnabled, log } from "./log.js";
import { packageFor } from "./tools.js";

export interface ExecOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** Written to the child's stdin, which is then closed. */
  input?: string | Buffer;
  /** Pass the terminal straight through (interactive tools, consoles). */
  inherit?: boolean;
  /** With `inherit`: "ignore" gives the child an empty stdin instead of the terminal's. */
  stdin?: "inherit" | "ignore";
  /** Called with each stderr/stdout line as it arrives (progress, logs). */
  onLine?: (line: string, stream: "stdout" | "stderr") => void;
  /** Exit codes that count as success (default [0]). */
  okCodes?: number[];
  /** Kill the child (SIGTERM, then SIGKILL) after this many ms. */
  timeoutMs?: number;
  /** Hint to show if the command fails. */
  hint?: string;
  /** Strings to mask in error messages and debug output (secrets). */
  redact?: string[];
  /** How to ask the child to stop if kiln is interrupted (default SIGTERM, 5 s before SIGKILL). */
  stopSignal?: NodeJS.Signals;
  stopGraceMs?: number;
  /**
   * Stream the output instead of collecting it (long-running containers):
   * each chunk goes here and ExecResult's stdout/stderr stay empty.
   * Takes precedence over `inherit` for stdout and stderr.
   */
  onData?: (chunk: Buffer, stream: "stdout" | "stderr") => void;
  /** Keep the child's stdin open as a pipe for the caller (see onSpawn) instead of writing `input`. */
  stdinPipe?: boolean;
  /** Told the child once it is started (its pid; its stdin with `stdinPipe`). */
  onSpawn?: (child: ChildProcess) => void;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** A host program that ran and failed; carries everything needed to explain it. */
export class ExecError extends KilnError {
  readonly command: string;
  readonly exit: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;

  constructor(p: {
    command: string;
    exit: number | null;
    signal: NodeJS.Signals | null;
    stdout: string;
    stderr: string;
    hint?: string;
    timedOut?: boolean;
  }) {
    const how = p.timedOut
      ? "timed out"
      : p.signal
        ? `was killed by ${p.signal}${p.signal === "SIGKILL" ? " (out of memory?)" : ""}`
        : `exited with ${p.exit}`;
    const tail = lastLines(p.stderr || p.stdout, 15);
    super("EXEC_FAILED", `${p.command} ${how}${tail ? `\n${indent(tail)}` : ""}`, {
      ...(p.hint ? { hint: p.hint } : {}),
    });
    this.name = "ExecError";
    this.command = p.command;
    this.exit = p.exit;
    this.signal = p.signal;
    this.stdout = p.stdout;
    this.stderr = p.stderr;
  }
}

/**
 * The one way kiln runs a host program: an argument array (never a shell
 * string), errors that name the command and show the end of its stderr, and
 * children that are ended if kiln is interrupted.
 */
export function exec(
  cmd: string,
  args: readonly string[],
  opts: ExecOptions = {},
): Promise<ExecResult> {
  const shown = redact(quoteCommand(cmd, args), opts.redact);
  if (debugEnabled()) log.debug(`$ ${shown}`);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, PATH: withSbin(process.env.PATH), ...opts.env },
      stdio: [
        opts.stdinPipe ? "pipe" : opts.inherit ? (opts.stdin ?? "inherit") : "pipe",
        opts.inherit && !opts.onData ? "inherit" : "pipe",
        opts.inherit && !opts.onData ? "inherit" : "pipe",
      ],
    });
    const drop = onCleanup(`process ${cmd}`, () =>
      terminate(child, opts.stopGraceMs, opts.stopSignal),
    );
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            void terminate(child);
          }, opts.timeoutMs);

    const lines = (stream: "stdout" | "stderr") => {
      let partial = "";
      return (chunk: Buffer) => {
        if (opts.onData) return opts.onData(chunk, stream);
        const text = chunk.toString("utf8");
        if (stream === "stdout") stdout += text;
        else stderr += text;
        if (!opts.onLine) return;
        const parts = (partial + text).split("\n");
        partial = parts.pop() ?? "";
        for (const l of parts) opts.onLine(l, stream);
      };
    };
    child.stdout?.on("data", lines("stdout"));
    child.stderr?.on("data", lines("stderr"));
    if (child.stdin) {
      child.stdin.on("error", () => {}); // the child may exit before reading it all
      if (!opts.stdinPipe) child.stdin.end(opts.input ?? "");
    }
    if (child.pid !== undefined) opts.onSpawn?.(child);

    child.on("error", (err: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      drop();
      if (err.code === "ENOENT") reject(new ToolMissingError(cmd, packageFor(cmd)));
      else
        reject(new KilnError("EXEC_SPAWN", `cannot start ${cmd}: ${err.message}`, { cause: err }));
    });
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      drop();
      const ok = code !== null && (opts.okCodes ?? [0]).includes(code);
      if (ok) return resolve({ stdout, stderr, code: code ?? 0 });
      reject(
        new ExecError({
          command: shown,
          exit: code,
          signal,
          stdout: redact(stdout, opts.redact),
          stderr: redact(stderr, opts.redact),
          ...(opts.hint ? { hint: opts.hint } : {}),
          timedOut,
        }),
      );
    });
  });
}

/**
 * Start a program that outlives kiln (the supervisor of `kiln run -d`): its
 * own session, no stdin, stdout and stderr appended to `logFile`. Returns its pid.
 */
export function spawnDetached(
  cmd: string,
  args: readonly string[],
  o: { logFile: string; env?: Record<string, string> },
): number {
  const fd = openSync(o.logFile, "a", 0o600);
  try {
    const child = spawn(cmd, args, {
      detached: true,
      stdio: ["ignore", fd, fd],
      env: { ...process.env, PATH: withSbin(process.env.PATH), ...o.env },
    });
    child.unref();
    if (child.pid === undefined) throw new KilnError("EXEC_SPAWN", `cannot start ${cmd}`);
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

/** SIGTERM (or `signal`), then SIGKILL if the child has not gone after `graceMs`. */
export function terminate(
  child: ChildProcess,
  graceMs = 5000,
  signal: NodeJS.Signals = "SIGTERM",
): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill("SIGKILL"), graceMs);
    child.once("close", () => {
      clearTimeout(t);
      resolve();
    });
    child.kill(signal);
  });
}

/** Host tools such as sfdisk live in sbin, which a non-login PATH may lack. */
function withSbin(path = "/usr/bin:/bin"): string {
  const parts = path.split(":");
  for (const d of ["/usr/sbin", "/sbin"]) if (!parts.includes(d)) parts.push(d);
  return parts.join(":");
}

/** Is the program on PATH? */
export async function which(cmd: string): Promise<string | undefined> {
  const { access, constants } = await import("node:fs/promises");
  const dirs = withSbin(process.env.PATH).split(":");
  for (const d of dirs) {
    const p = `${d}/${cmd}`;
    try {
      await access(p, constants.X_OK);
      return p;
    } catch {}
  }
  return undefined;
}

/** A command line a person can paste into a shell. */
export function quoteCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map(shellQuote).join(" ");
}

export function shellQuote(s: string): string {
  if (/^[A-Za-z0-9_./:=@%+,-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function redact(text: string, secrets: string[] | undefined): string {
  let out = text;
  for (const s of secrets ?? []) if (s) out = out.split(s).join("***");
  return out;
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split("\n").slice(-n).join("\n");
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => `  | ${l}`)
    .join("\n");
}

export interface Started {
  child: ChildProcess;
  /** Resolves with the exit status when the process has ended. */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL; safe to call more than once. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Start a long-running program (a VM, a container, a server). Its output is
 * handed to `onData`; it is ended if kiln is interrupted.
 */
export function start(
  cmd: string,
  args: readonly string[],
  opts: {
    onData?: (chunk: string) => void;
    cwd?: string;
    env?: Record<string, string | undefined>;
  } = {},
): Promise<Started> {
  if (debugEnabled()) log.debug(`$ ${quoteCommand(cmd, args)}`);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, PATH: withSbin(process.env.PATH), ...opts.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const drop = onCleanup(`process ${cmd}`, () => terminate(child));
    const exited = new Promise<number | null>((res) => {
      child.on("close", (code) => {
        drop();
        res(code);
      });
    });
    child.stdout?.on("data", (b: Buffer) => opts.onData?.(b.toString("utf8")));
    child.stderr?.on("data", (b: Buffer) => opts.onData?.(b.toString("utf8")));
    child.once("error", (err: NodeJS.ErrnoException) => {
      drop();
      reject(err.code === "ENOENT" ? new ToolMissingError(cmd, packageFor(cmd)) : err);
    });
    child.once("spawn", () => resolve({ child, exited, stop: (g) => terminate(child, g) }));
  });
}
