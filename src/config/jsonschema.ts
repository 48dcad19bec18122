import { z } from "zod";
import { specSchema } from "./schema.js";

/** The JSON Schema editors use to complete and check specs (committed as schema/spec.json). */
export function specJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(specSchema, { io: "input", unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return {
    ...schema, // Not a URL: kiln owns no domain, and an editor must not fetch a schema from whoever does.
    $id: "urn:kiln:schema:spec",
    title: "kiln spec",
  };
}
