/**
 * Logging and progress. On a terminal, long steps show as one line with a
 * running timer; otherwise (CI, pipes) each step prints a start and an end
 * line. `--json` commands send all of this to stderr so stdout stays parseable.
 */
let debug = process.env.KILN_DEBUG === "1";
let quiet = false;
const out = process.stderr;

export function setDebug(on: boolean): void {
  debug = on;
}
export function setQuiet(on: boolean): void {
  quiet = on;
}
export function debugEnabled(): boolean {
  return debug;
}

export const log = {
  info(msg: string): void {
    if (!quiet) out.write(`${msg}\n`);
  },
  warn(msg: string): void {
    out.write(`warning: ${msg}\n`);
  },
  debug(msg: string): void {
    if (debug) out.write(`debug: ${msg}\n`);
  },
};

export interface StepProgress {
  /** A line of detail (shown in place on a terminal, only in --debug otherwise). */
  detail(text: string): void;
  done(note?: string): number;
  fail(): number;
}

/** Start a named step; returns a handle that ends it and reports its duration. */
export function step(title: string): StepProgress {
  const started = performance.now();
  const tty = out.isTTY && !quiet && !debug;
  const seconds = () => (performance.now() - started) / 1000;
  let timer: NodeJS.Timeout | undefined;
  let lastDetail = "";
  const draw = () => {
    const d = lastDetail
      ? `  ${lastDetail.slice(0, Math.max(0, (out.columns ?? 80) - title.length - 20))}`
      : "";
    out.write(`\r\x1b[2K  … ${title} ${seconds().toFixed(0)}s${d}`);
  };
  if (tty) {
    draw();
    timer = setInterval(draw, 500);
    timer.unref();
  } else if (!quiet) {
    out.write(`  … ${title}\n`);
  }
  const finish = (mark: string, note?: string) => {
    if (timer) clearInterval(timer);
    const s = seconds();
    if (!quiet)
      out.write(
        `${tty ? "\r\x1b[2K" : ""}  ${mark} ${title} (${s.toFixed(1)}s)${note ? ` ${note}` : ""}\n`,
      );
    return s;
  };
  return {
    detail(text: string) {
      lastDetail = text.trim();
      if (debug) out.write(`debug:   ${lastDetail}\n`);
    },
    done: (note?: string) => finish("✓", note),
    fail: () => finish("✗"),
  };
}
