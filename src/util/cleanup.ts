/**
 * One place that knows what must be undone if kiln stops early: temp dirs,
 * child processes, namespaces. Steps register an undo action and drop it
 * when they finish normally; a signal runs whatever is left, newest first.
 */
type Undo = () => void | Promise<void>;

const pending = new Map<number, { what: string; undo: Undo }>();
let nextId = 1;
let installed = false;
let interrupted = 0;
let cleaning: Promise<void> | undefined;

export function onCleanup(what: string, undo: Undo): () => void {
  installHandlers();
  const id = nextId++;
  pending.set(id, { what, undo });
  return () => {
    pending.delete(id);
  };
}

/** Run every pending undo action, newest first; errors are reported, not thrown. */
export async function runCleanups(): Promise<void> {
  const items = [...pending.entries()].reverse();
  pending.clear();
  for (const [, { what, undo }] of items) {
    try {
      await undo();
    } catch (err) {
      process.stderr.write(`kiln: cleanup of ${what} failed: ${String(err)}\n`);
    }
  }
}

/** 128 + the signal's number, as a shell reports a process the signal ended. */
const STATUS: Record<string, number> = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };
let stopSignal: NodeJS.Signals | undefined;

/**
 * After a signal, the work in flight fails as its processes are ended; the
 * command must then wait for the cleanup to finish rather than exit with
 * that failure's status.
 */
export async function afterInterrupt(): Promise<number | undefined> {
  if (!interrupted) return undefined;
  await cleaning;
  return STATUS[stopSignal ?? "SIGINT"];
}

/**
 * A vanished terminal (SIGHUP) leaves stdin, stdout and stderr pointing at
 * nothing: writing there fails with EIO, and an unhandled stream error would
 * end kiln in the middle of its cleanup. Such errors are dropped from then on.
 */
function detachFromTerminal(): void {
  for (const s of [process.stdin, process.stdout, process.stderr]) s.on("error", () => {});
}

/** The signals that end a long-running command (a VM, a container, a server) cleanly. */
const STOP_SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

function installHandlers(): void {
  if (installed) return;
  installed = true;
  const handler = (signal: NodeJS.Signals) => {
    if (signal === "SIGHUP") detachFromTerminal();
    interrupted++;
    if (interrupted > 1) {
      // A second Ctrl-C while cleaning up means "stop now". Anything else is
      // a repeat, not a person: a closed terminal sends SIGHUP to kiln and
      // again through its shell; a supervisor may send SIGTERM twice.
      if (signal === "SIGINT") process.exit(130);
      return;
    }
    stopSignal = signal;
    if (signal !== "SIGHUP") process.stderr.write(`\nkiln: ${signal}, cleaning up…\n`);
    cleaning = runCleanups();
    void cleaning.finally(() => process.exit(STATUS[signal]));
  };
  for (const s of STOP_SIGNALS) process.on(s, handler);
}

/**
 * Make something that must be undone (a scratch dir, a mount): `undo` is
 * registered for signals while it exists, run at once if `make` fails, and
 * run by the returned `dispose` when the caller is done.
 */
export async function acquire<T>(
  what: string,
  undo: Undo,
  make: () => Promise<T>,
): Promise<{ value: T; dispose(): Promise<void> }> {
  const drop = onCleanup(what, undo);
  const dispose = async () => {
    drop();
    await undo();
  };
  try {
    return { value: await make(), dispose };
  } catch (err) {
    await dispose();
    throw err;
  }
}
