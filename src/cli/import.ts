import type { Command } from "commander";
import { importDisk } from "../cloud/import.js";
import { diskPath, listDisks, removeDisk } from "../cloud/store.js";
import { requireTools } from "../util/doctor.js";
import { printJson, printTable } from "./output.js";

const gib = (n: number) => `${(n / 2 ** 30).toFixed(1)} GiB`;

export function registerImport(program: Command): void {
  program
    .command("import")
    .argument("<source>", "URL (http/https) or file: raw, qcow2, or a tar.xz/tar.gz holding one")
    .option("--sha512 <sum>", "expected digest (SHA-512; a 64-digit SHA-256 works too)")
    .option("--checksums <url-or-file>", "a SHA512SUMS-style list to look the file's digest up in")
    .option("--name <name>", "store it as image:NAME (default: from the file name)")
    .option("--force", "replace an imported disk of the same name")
    .option("--json", "print the stored record as JSON")
    .description(
      "download (resumable), verify and unpack a vendor disk image; specs customise it with `base: image:NAME`",
    )
    .action(
      async (
        source: string,
        o: { sha512?: string; checksums?: string; name?: string; force?: boolean; json?: boolean },
      ) => {
        await requireTools(["qemu-img", "sfdisk", "tar"]);
        const r = await importDisk(source, {
          ...(o.sha512 ? { sum: o.sha512 } : {}),
          ...(o.checksums ? { checksums: o.checksums } : {}),
          ...(o.name ? { name: o.name } : {}),
          force: !!o.force,
        });
        if (o.json) return printJson({ ok: true, ...r, path: diskPath(r.name) });
        console.log(
          `imported ${r.name}: ${gib(r.virtualSize)} ${r.format} disk, root on partition ${r.root}${r.verified ? `, ${r.verified.split(":")[0]} verified` : ", NOT verified"}`,
        );
        console.log(`use it in a spec: base: image:${r.name}`);
      },
    );

  const disks = program
    .command("disks")
    .description("imported disks (the bases of `base: image:NAME`)")
    .option("--json", "as JSON")
    .action((o: { json?: boolean }) => {
      const all = listDisks();
      if (o.json) return printJson(all);
      printTable([
        ["NAME", "SIZE", "FORMAT", "VERIFIED", "IMPORTED", "SOURCE"],
        ...all.map((d) => [
          d.name,
          gib(d.virtualSize),
          d.format,
          d.verified ? d.verified.split(":")[0]! : "no",
          d.imported.slice(0, 19).replace("T", " "),
          d.source,
        ]),
      ]);
    });
  disks
    .command("rm")
    .argument("<name...>")
    .description("delete imported disks")
    .action(async (names: string[]) => {
      for (const n of names) {
        await removeDisk(n);
        console.log(n);
      }
    });
}
