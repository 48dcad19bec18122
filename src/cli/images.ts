import type { Command } from "commander";
import { pullDistro } from "../containers/pull.js";
import { listImages, parseRef, refText, removeImage } from "../containers/store.js";
import { KilnError } from "../util/errors.js";
import { step } from "../util/log.js";
import { printJson, printTable } from "./output.js";

/** The image store verbs: pull, images, rmi. */
export function registerImages(program: Command): void {
  program
    .command("pull")
    .argument("<image>", "debian:RELEASE or ubuntu:RELEASE")
    .option("--force", "bootstrap again even if the image is stored")
    .option("--json", "print the stored image as JSON")
    .description(
      "put an image into the local store (distributions are bootstrapped with mmdebstrap)",
    )
    .action(async (text: string, o: { force?: boolean; json?: boolean }) => {
      const ref = parseRef(text);
      if (ref.name.startsWith("docker://") || ref.name.startsWith("oci:"))
        throw new KilnError(
          "PULL_UNSUPPORTED",
          `${text}: registry and OCI pulls are not built yet`,
          {
            exitCode: 2,
          },
        );
      const progress = step(`pull ${refText(ref)}`);
      const { image, fresh } = await pullDistro(ref, {
        ...(o.force ? { force: true } : {}),
        onLine: (l) => progress.detail(l),
      }).catch((err) => {
        progress.fail();
        throw err;
      });
      progress.done(fresh ? `${(image.bytes / 2 ** 20).toFixed(1)} MiB` : "already stored");
      if (o.json) printJson(image);
      else console.log(`${refText(image)}: ${fresh ? "pulled" : "image is up to date"}`);
    });

  program
    .command("images")
    .option("--json", "machine-readable output")
    .description("list the images in the local store")
    .action((o: { json?: boolean }) => {
      const images = listImages();
      if (o.json) return printJson(images);
      const rows = [["REPOSITORY", "TAG", "SIZE", "CREATED", "SOURCE"]];
      for (const i of images)
        rows.push([i.name, i.tag, `${(i.bytes / 2 ** 20).toFixed(1)}MiB`, i.created, i.source]);
      printTable(rows);
    });

  program
    .command("rmi")
    .argument("<images...>", "NAME:TAG")
    .description("remove images from the local store")
    .action(async (texts: string[]) => {
      for (const t of texts) {
        const ref = parseRef(t);
        await removeImage(ref);
        console.log(`Untagged: ${refText(ref)}`);
      }
    });
}
