import { afterAll } from "vitest";
import { openFleet } from "../../src/fleet/open.js";
import { fleetSuite } from "../shared/fleet-suite.js";
import { startPostgres } from "../support/postgres.js";

// The fleet store's shared suite on a real PostgreSQL server (the unit tests run it on SQLite).
const pg = startPostgres();
afterAll(() => pg.stop());

let n = 0;
let url = pg.url;
fleetSuite("PostgreSQL", (limits, now) => {
  if (Object.keys(limits).length) url = pg.create(`suite_${++n}`);
  return openFleet(url, limits, now);
});
