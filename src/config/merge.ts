/**
 * How `extends` composes specs: objects merge key by key, scalars from the
 * extending spec win, lists of scalars are unions (base first), and lists of
 * objects merge by their identifying key (a user by name, a file by path).
 */
const LIST_KEYS: Record<string, string> = {
  users: "name",
  files: "path",
  tests: "name",
  interfaces: "match",
};

/** Lists an extending spec replaces outright: what to make is not a union of what the base made. */
const REPLACED_LISTS = new Set(["outputs", "firmware"]);

type Json = unknown;

export function mergeSpecs(base: Json, over: Json, key = ""): Json {
  if (Array.isArray(base) && Array.isArray(over)) {
    return REPLACED_LISTS.has(key) ? over : mergeLists(base, over, LIST_KEYS[key]);
  }
  if (isObject(base) && isObject(over)) {
    const out: Record<string, Json> = { ...base };
    for (const [k, v] of Object.entries(over)) out[k] = k in base ? mergeSpecs(base[k], v, k) : v;
    return out;
  }
  return over === undefined ? base : over;
}

function mergeLists(base: Json[], over: Json[], idKey: string | undefined): Json[] {
  const out = [...base];
  for (const item of over) {
    const id = idKey && isObject(item) ? item[idKey] : undefined;
    const at =
      id !== undefined
        ? out.findIndex((b) => isObject(b) && b[idKey!] === id)
        : out.findIndex((b) => !isObject(b) && b === item);
    if (at < 0) out.push(item);
    else out[at] = id !== undefined ? mergeSpecs(out[at], item) : item;
  }
  return out;
}

function isObject(v: Json): v is Record<string, Json> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
