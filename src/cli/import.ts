import { mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import type { Command } from "commander";
import { importDisk } from "../cloud/import.js";
import { diskPath, findDisk, listDisks, removeDisk } from "../cloud/store.js";
import { fetchContainerDisk } from "../publish/fetch.js";
import { accessFrom, parseRegistryRef, refText } from "../publish/registry.js";
import { onCleanup } from "../util/cleanup.js";
import { requireTools } from "../util/doctor.js";
import { KilnError } from "../util/errors.js";
import { removeTree } from "../util/fsx.js";
import { scratchDir } from "../util/paths.js";
import { printJson, printTable } from "./output.js";

const gib = (n: number) => `${(n / 2 ** 30).toFixed(1)} GiB`;

interface ImportFlags {
  sha512?: string;
  checksums?: string;
  name?: string;
  force?: boolean;
  json?: boolean;
  insecure?: boolean;
  tlsVerify: string;
  authfile?: string;
  verifyKey?: string;
  maxSize: string;
}

/** "64G", "500M", "1024" (bytes) → bytes. */
export function sizeBytes(text: string): number {
  const m = /^(\d+)([KMGT]?)i?B?$/i.exec(text.trim());
  if (!m) throw new KilnError("USAGE", `not a size: ${text} (e.g. 64G)`);
  const pow = { "": 0, K: 1, M: 2, G: 3, T: 4 }[m[2]!.toUpperCase() as "" | "K" | "M" | "G" | "T"];
  return Number(m[1]) * 1024 ** pow;
}

/**
 * `oci://REF`: fetch the containerDisk into scratch, take its disk out
 * (checked, see fetchContainerDisk), then store it as an ordinary import
 * whose expected sha256 is the one just checked and whose source is the
 * image's digest.
 */
async function importOci(source: string, o: ImportFlags) {
  await requireTools(["skopeo", ...(o.verifyKey ? ["openssl"] : [])]);
  const ref = parseRegistryRef(source);
  // Say so before fetching a disk that could not be stored anyway.
  if (o.name && findDisk(o.name) && !o.force)
    throw new KilnError("IMPORT_EXISTS", `a disk named ${o.name} is already imported`, {
      hint: "pick another --name, add --force to replace it, or `kiln disks rm` it",
    });
  const scratch = await mkdtemp(join(scratchDir(), "kiln-oci-import-"));
  const drop = onCleanup(`oci import scratch ${scratch}`, () => removeTree(scratch));
  try {
    const got = await fetchContainerDisk(ref, scratch, {
      access: accessFrom(o),
      maxBytes: sizeBytes(o.maxSize),
      ...(o.verifyKey ? { verifyKey: o.verifyKey } : {}),
    });
    // --sha512 or --checksums, when given, are checked on top of what the image vouched for.
    const sum = o.sha512 ?? (o.checksums ? undefined : got.sha256);
    const r = await importDisk(got.path, {
      ...(sum ? { sum } : {}),
      ...(o.checksums ? { checksums: o.checksums } : {}),
      recordSource: `oci://${refText({ ...ref, tag: undefined, digest: got.digest })}`,
      name: o.name ?? got.file.replace(/\.(qcow2|raw|img)$/, "").toLowerCase(),
      force: !!o.force,
    });
    return { record: r, sums: got.sums, digest: got.digest };
  } finally {
    await removeTree(scratch);
    drop();
  }
}

export function registerImport(program: Command): void {
  program
    .command("import")
    .argument(
      "<source>",
      "URL (http/https), file (raw, qcow2, or a tar.xz/tar.gz holding one), or oci://HOST/REPO[:TAG|@DIGEST] (a containerDisk)",
    )
    .option("--sha512 <sum>", "expected digest (SHA-512; a 64-digit SHA-256 works too)")
    .option("--checksums <url-or-file>", "a SHA512SUMS-style list to look the file's digest up in")
    .option("--name <name>", "store it as image:NAME (default: from the file name)")
    .option("--force", "replace an imported disk of the same name")
    .option("--json", "print the stored record as JSON")
    .option("--insecure", "oci://: a plain-HTTP registry, or one without a verifiable certificate")
    .option("--tls-verify <bool>", "oci://: require HTTPS and a verified certificate", "true")
    .option("--authfile <file>", "oci://: skopeo/docker auth file (else KILN_REGISTRY_CREDS)")
    .option(
      "--verify-key <pem>",
      "oci://: require the image's SHA256SUMS, signed by this public key",
    )
    .option("--max-size <size>", "oci://: refuse a disk larger than this", "256G")
    .description(
      "download (resumable), verify and unpack a vendor disk image; specs customise it with `base: image:NAME`",
    )
    .action(async (source: string, o: ImportFlags) => {
      await requireTools(["qemu-img", "sfdisk", "tar"]);
      let r: Awaited<ReturnType<typeof importDisk>>;
      let oci: { sums: string; digest: string } | undefined;
      if (source.startsWith("oci://")) {
        const got = await importOci(source, o);
        r = got.record;
        oci = { sums: got.sums, digest: got.digest };
      } else {
        if (o.verifyKey)
          throw new KilnError("USAGE", "--verify-key is for oci:// sources (use --checksums)");
        r = await importDisk(source, {
          ...(o.sha512 ? { sum: o.sha512 } : {}),
          ...(o.checksums ? { checksums: o.checksums } : {}),
          ...(o.name ? { name: o.name } : {}),
          force: !!o.force,
        });
      }
      if (o.json)
        return printJson({ ok: true, ...r, path: diskPath(r.name), ...(oci ? { oci } : {}) });
      console.log(
        `imported ${r.name}: ${gib(r.virtualSize)} ${r.format} disk, root on partition ${r.root}${r.verified ? `, ${r.verified.split(":")[0]} verified` : ", NOT verified"}${oci ? ` (SHA256SUMS: ${oci.sums})` : ""}`,
      );
      console.log(`use it in a spec: base: image:${r.name}`);
    });

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
