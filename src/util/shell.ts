/** Quote one word for a POSIX shell (sh, bash): as is when it is plainly safe, else in single quotes. */
export function shellQuote(s: string): string {
  if (/^[A-Za-z0-9_./:=@%+,-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
