import type { Command } from "commander";
import { parseOciSource, pullOci } from "../containers/oci.js";
import { pullDistro } from "../containers/pull.js";
import { listImages, parsePlatform, parseRef, refText, removeImage } from "../containers/store.js";
import { hostArch } from "../util/binfmt.js";
import { KilnError } from "../util/errors.js";
import { step } from "../util/log.js";
import { printJson, printTable } from "./output.js";

/** The image store verbs: pull, images, rmi. */
export function registerImages(program: Command): void {
  program
    .command("pull")
    .argument("<image>", "debian:RELEASE, ubuntu:RELEASE, docker://HOST/REPO:TAG or oci:DIR:TAG")
    .option("--force", "fetch or bootstrap again even if the image is stored")
    .option(
      "--platform <os/arch>",
      "linux/arm64 or linux/amd64 (default: the host's); stored beside the host's image of the same tag",
    )
    .option(
      "--tls-verify <bool>",
      "for docker://: verify the registry's TLS (default: not on loopback)",
    )
    .option("--json", "print the stored image as JSON")
    .description(
      "put an image into the local store (distributions are bootstrapped with mmdebstrap)",
    )
    .action(
      async (
        text: string,
        o: { force?: boolean; json?: boolean; tlsVerify?: string; platform?: string },
      ) => {
        const arch = parsePlatform(o.platform);
        const oci = parseOciSource(text);
        if (oci && arch) oci.ref.arch = arch;
        const ref = oci?.ref ?? { ...parseRef(text), ...(arch ? { arch } : {}) };
        if (o.tlsVerify !== undefined && !["true", "false"].includes(o.tlsVerify))
          throw new KilnError("USAGE", "--tls-verify is true or false", { exitCode: 2 });
        const progress = step(`pull ${oci ? text : refText(ref)}`);
        const opts = {
          ...(o.force ? { force: true } : {}),
          onLine: (l: string) => progress.detail(l),
        };
        const pulled = oci
          ? pullOci(oci, {
              ...opts,
              ...(o.tlsVerify !== undefined ? { tlsVerify: o.tlsVerify === "true" } : {}),
            })
          : pullDistro(ref, opts);
        const { image, fresh } = await pulled.catch((err) => {
          progress.fail();
          throw err;
        });
        progress.done(fresh ? `${(image.bytes / 2 ** 20).toFixed(1)} MiB` : "already stored");
        if (o.json) printJson(image);
        else
          console.log(
            `${refText(image)}${image.arch ? ` (linux/${image.arch})` : ""}: ${fresh ? "pulled" : "image is up to date"}`,
          );
      },
    );

  program
    .command("images")
    .option("--json", "machine-readable output")
    .description("list the images in the local store")
    .action((o: { json?: boolean }) => {
      const images = listImages();
      if (o.json) return printJson(images);
      const rows = [["REPOSITORY", "TAG", "PLATFORM", "SIZE", "CREATED", "SOURCE"]];
      for (const i of images)
        rows.push([
          i.name,
          i.tag,
          `linux/${i.arch ?? hostArch()}`,
          `${(i.bytes / 2 ** 20).toFixed(1)}MiB`,
          i.created,
          i.source,
        ]);
      printTable(rows);
    });

  program
    .command("rmi")
    .argument("<images...>", "NAME:TAG")
    .option("--platform <os/arch>", "the stored image of that architecture (linux/arm64)")
    .description("remove images from the local store")
    .action(async (texts: string[], o: { platform?: string }) => {
      const arch = parsePlatform(o.platform);
      for (const t of texts) {
        const ref = { ...parseRef(t), ...(arch ? { arch } : {}) };
        await removeImage(ref);
        console.log(`Untagged: ${refText(ref)}`);
      }
    });
}
