/**
 * GRUB's environment block: exactly 1024 bytes, a fixed header, `key=value`
 * lines, padded with '#'. GRUB's save_env rewrites it in place, so the size
 * must never change. Kept compatible with `grub-editenv`.
 */
export const GRUBENV_SIZE = 1024;
const HEADER = "# GRUB Environment Block\n";

export function parseGrubenv(block: Buffer | string): Map<string, string> {
  const text = typeof block === "string" ? block : block.toString("latin1");
  if (!text.startsWith(HEADER)) throw new Error("not a GRUB environment block");
  const vars = new Map<string, string>();
  for (const line of text.slice(HEADER.length).split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq > 0) vars.set(line.slice(0, eq), unescapeValue(line.slice(eq + 1)));
  }
  return vars;
}

export function formatGrubenv(vars: Map<string, string> | Record<string, string>): Buffer {
  const entries = vars instanceof Map ? [...vars] : Object.entries(vars);
  let body = HEADER;
  for (const [k, v] of entries) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`invalid grubenv name ${k}`);
    body += `${k}=${escapeValue(v)}\n`;
  }
  if (body.length > GRUBENV_SIZE) throw new Error("grubenv variables exceed 1024 bytes");
  return Buffer.from(body.padEnd(GRUBENV_SIZE, "#"), "latin1");
}

// grub-editenv escapes backslash and newline.
function escapeValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}
function unescapeValue(v: string): string {
  return v.replace(/\\(.)/g, (_m, c: string) => (c === "n" ? "\n" : c));
}
