import { type ExecOptions, type ExecResult, exec } from "./exec.js";

/**
 * Root filesystems travel as tar with numeric owners and every extended
 * attribute (file capabilities such as ping's live in security.*), so one
 * argument list is shared by everything that packs or unpacks a tree.
 */
const KEEP_OWNERS_AND_XATTRS = ["--numeric-owner", "--xattrs", "--xattrs-include=*"];

/** Unpack `tar` into the existing directory `dir`. */
export function extractTree(
  tar: string,
  dir: string,
  o: ExecOptions = {},
  select: {
    /** Members (and what is below them) left out, as GNU tar patterns. */
    exclude?: string[];
    /** A file listing the only members to unpack, exactly as named, one a line. */
    only?: string;
  } = {},
): Promise<ExecResult> {
  return exec(
    "tar",
    [
      ...KEEP_OWNERS_AND_XATTRS,
      ...(select.exclude?.length
        ? ["--wildcards", ...select.exclude.map((e) => `--exclude=${e}`)]
        : []),
      "-C",
      dir,
      "-xf",
      tar,
      ...(select.only ? ["--no-recursion", "--verbatim-files-from", "-T", select.only] : []),
    ],
    o,
  );
}

/**
 * Pack `dir` into `out`: the whole tree, or only the paths listed in the
 * file `only` (one a line, no recursion into directories).
 */
export function archiveTree(
  dir: string,
  out: string,
  o: { compress?: string; sort?: boolean; only?: string } = {},
): Promise<ExecResult> {
  return exec("tar", [
    ...KEEP_OWNERS_AND_XATTRS,
    ...(o.sort ? ["--sort=name"] : []),
    ...(o.compress ? ["-I", o.compress] : []),
    ...(o.only ? ["--no-recursion"] : []),
    "-C",
    dir,
    "-cf",
    out,
    ...(o.only ? ["-T", o.only] : ["."]),
  ]);
}
