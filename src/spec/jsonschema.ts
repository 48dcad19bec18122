import { z } from "zod";
import { specSchema } from "./schema.js";

/** The JSON Schema editors use to complete and check specs (committed as schema/spec.json). */
export function specJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(specSchema, { io: "input", unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return { ...schema, $id: "https://kiln.dev/schema/spec.json", title: "kiln spec" };
}
