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

/**
 * After a signal, the work in flight fails as its processes are ended; the
 * command must then wait for the cleanup to finish rather than exit with
 * that failure's status.
 */
export async function afterInterrupt(): Promise<number | undefined> {
  if (!interrupted) return undefined;
  await cleaning;
  return 130;
}

function installHandlers(): void {
  if (installed) return;
  installed = true;
  const handler = (signal: NodeJS.Signals) => {
    interrupted++;
    // A second Ctrl-C while cleaning up means "stop now".
    if (interrupted > 1) process.exit(130);
    process.stderr.write(`\nkiln: ${signal}, cleaning up…\n`);
    cleaning = runCleanups();
    void cleaning.finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  process.on("SIGHUP", handler);
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
