import { Command, CommanderError } from "commander";
import { afterInterrupt, runCleanups } from "../util/cleanup.js";
import { setDebug, setQuiet } from "../util/log.js";
import { KILN_VERSION } from "../util/version.js";
import { registerAddons } from "./addons.js";
import { registerBoot } from "./boot.js";
import { registerBuild } from "./build.js";
import { registerBundle } from "./bundle.js";
import { registerCi } from "./ci.js";
import { registerContainers } from "./containers.js";
import { registerDiff } from "./diff.js";
import { registerDoctor } from "./doctor.js";
import { registerImages } from "./images.js";
import { registerImport } from "./import.js";
import { registerInit } from "./init.js";
import { registerInspect } from "./inspect.js";
import { registerKeys } from "./keys.js";
import { registerLock } from "./lock.js";
import { registerMachines } from "./machines.js";
import { reportError } from "./output.js";
import { registerProbe } from "./probe.js";
import { registerPush } from "./push.js";
import { registerRun, runArgv } from "./run.js";
import { registerSchema } from "./schema.js";
import { registerSeed } from "./seed.js";
import { registerServe } from "./serve.js";
import { registerSsh } from "./ssh.js";
import { registerTest } from "./test.js";
import { registerVm } from "./vm.js";

/** Thin wiring: each verb lives in its own file and only maps arguments to a library call. */
export async function main(argv: string[]): Promise<number> {
  let json = false;
  const program = new Command("kiln")
    .description("One YAML spec to a minimal Linux system: build, boot, test, deliver.")
    .option("--debug", "print every host command as a copy-pasteable line, and stacks")
    .option("-q, --quiet", "only errors and results")
    .exitOverride()
    .hook("preAction", (cmd, action) => {
      const o = cmd.opts();
      if (o.debug) setDebug(true);
      if (o.quiet) setQuiet(true);
      // The verb's own --json option, not a "--json" anywhere in argv (a
      // container's command may carry one): it decides the error format too.
      json = action.opts().json === true;
      if (json) setQuiet(true);
    });
  // kiln's own --version only before any verb: after one, `--version` is the verb's
  // (`kiln bundle --version 2.0`), which commander would otherwise answer with kiln's.
  if (!argv.slice(2).some((a) => !a.startsWith("-"))) program.version(KILN_VERSION);
  for (const register of [
    registerInit,
    registerBuild,
    registerLock,
    registerImport,
    registerPush,
    registerBoot,
    registerVm,
    registerTest,
    registerSsh,
    registerImages,
    registerRun,
    registerContainers,
    registerProbe,
    registerKeys,
    registerBundle,
    registerSeed,
    registerServe,
    registerAddons,
    registerMachines,
    registerInspect,
    registerDiff,
    registerCi,
    registerDoctor,
    registerSchema,
  ])
    register(program);
  try {
    await program.parseAsync(runArgv(argv));
    return (await afterInterrupt()) ?? Number(process.exitCode ?? 0);
  } catch (err) {
    const interrupted = await afterInterrupt();
    if (interrupted !== undefined) return interrupted;
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; usage errors were already printed.
      return err.exitCode === 0 ? 0 : 2;
    }
    await runCleanups();
    return reportError(err, json);
  }
}
