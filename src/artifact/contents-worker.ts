import { parentPort, workerData } from "node:worker_threads";
import { treeListing } from "./contents.js";

// The listing hashes every file of the root synchronously (see treeListing);
// in a worker it runs beside the disk step, which only reads the same tree.
parentPort?.postMessage(await treeListing(workerData as string));
