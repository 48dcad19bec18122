// Importing a driver registers it.
import "./debian.js";
import "./ubuntu.js";

export { type DistroDriver, distroDriver, distroIds, knownReleases } from "./driver.js";
