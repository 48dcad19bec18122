/** A position in a source file, 1-based as editors show it. */
export interface SourceLocation {
  file: string;
  line: number;
  column: number;
}

export interface KilnErrorOptions {
  hint?: string;
  loc?: SourceLocation;
  cause?: unknown;
  /** Process exit status the CLI should use (default 1). */
  exitCode?: number;
}

/**
 * Every error a user may see. `code` is stable so scripts (and `--json`) can
 * match on it; the message is for people and may change.
 */
export class KilnError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  readonly loc: SourceLocation | undefined;
  readonly exitCode: number;

  constructor(code: string, message: string, opts: KilnErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "KilnError";
    this.code = code;
    this.hint = opts.hint;
    this.loc = opts.loc;
    this.exitCode = opts.exitCode ?? 1;
  }
}

/** One problem found in a spec, with where it is. */
export interface Diagnostic {
  loc: SourceLocation;
  message: string;
  /** Source excerpt with a caret, ready to print. */
  frame?: string;
}

/** A spec with one or more problems; all of them are reported at once. */
export class SpecError extends KilnError {
  readonly diagnostics: Diagnostic[];

  constructor(diagnostics: Diagnostic[]) {
    const first = diagnostics[0];
    super(
      "SPEC_INVALID",
      diagnostics
        .map((d) => `${d.loc.file}:${d.loc.line}:${d.loc.column}: ${d.message}`)
        .join("\n"),
      first ? { loc: first.loc } : {},
    );
    this.name = "SpecError";
    this.diagnostics = diagnostics;
  }
}

/** A host program kiln needs is not installed. */
export class ToolMissingError extends KilnError {
  readonly tool: string;
  constructor(tool: string, pkg: string | undefined) {
    super("TOOL_MISSING", `${tool} not found`, {
      hint: `install it with \`kiln doctor --install\`${pkg ? ` (Debian package ${pkg})` : ""}`,
    });
    this.tool = tool;
  }
}

/** Something kiln itself got wrong: a bug, printed with its stack. */
export class InternalError extends KilnError {
  constructor(message: string, cause?: unknown) {
    super("INTERNAL", message, { cause });
    this.name = "InternalError";
  }
}
