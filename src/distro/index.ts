// Importing a driver registers it.
import "./debian.js";
import "./ubuntu.js";

export { distroDriver, knownDistros, type DistroDriver } from "./driver.js";
