import type { Command } from "commander";
import { initAddonKeys, initKeys } from "../deliver/keys.js";
import { printJson } from "./output.js";

export function registerKeys(program: Command): void {
  const keys = program
    .command("keys")
    .description("signing keys for A/B update bundles and add-on lists");
  keys
    .command("init")
    .argument("[dir]", "where the keys go", "keys")
    .option("--force", "replace existing keys")
    .option("--subject <name>", "organisation name in the certificates", "kiln development")
    .option("--json", "print the paths as JSON")
    .description("make a development signing CA and a signing key (private keys 0600)")
    .action(async (dir: string, o: { force?: boolean; subject: string; json?: boolean }) => {
      const k = await initKeys(dir, { force: !!o.force, subject: o.subject });
      if (o.json) return printJson(k);
      console.log(`made a development CA and signing key in ${k.dir}:
  ${k.caCert}     CA certificate: the spec's update.keyring (goes into images)
  ${k.caKey}      CA key (0600): keep offline; only signs signing certificates
  ${k.cert}  signing certificate   } kiln bundle --cert ... --key ...
  ${k.key}   signing key (0600)   }

Keep the keys out of git. For production, make the CA and signing key on an
offline machine or an HSM, put only the CA certificate in update.keyring, and
pass the signing key to \`kiln bundle --key\` as a file or a PKCS#11 URI
(pkcs11:token=...;object=...), which RAUC signs with directly.`);
    });
  keys
    .command("addons")
    .argument("[dir]", "where the keys go", "keys")
    .option("--force", "replace an existing pair")
    .option("--json", "print the paths as JSON")
    .description("make the key pair that signs add-on lists (private key 0600)")
    .action(async (dir: string, o: { force?: boolean; json?: boolean }) => {
      const k = await initAddonKeys(dir, { force: !!o.force });
      if (o.json) return printJson(k);
      console.log(`made an add-on signing key pair in ${k.dir}:
  ${k.pub}  public key: the spec's agent.keyring (goes into images)
  ${k.key}  private key (0600): kiln addons sign INVENTORY --key ...

Keep the private key out of git and off the boot server: kiln serve only
needs the signed list (addons.list, addons.list.sig) that kiln addons sign writes.`);
    });
}
