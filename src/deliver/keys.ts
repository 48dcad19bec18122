import { generateKeyPairSync } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { KilnError } from "../util/errors.js";
import { exec } from "../util/exec.js";

export interface KeySet {
  dir: string;
  caKey: string;
  caCert: string;
  key: string;
  cert: string;
}

/** openssl req: a new unencrypted EC P-256 key (small, fast, and accepted by RAUC). */
const NEW_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

export function keyPaths(dir: string): KeySet {
  const d = resolve(dir);
  return {
    dir: d,
    caKey: join(d, "ca.key.pem"),
    caCert: join(d, "ca.cert.pem"),
    key: join(d, "signing.key.pem"),
    cert: join(d, "signing.cert.pem"),
  };
}

/**
 * A development signing CA and a signing key certified by it (EC P-256).
 * The CA certificate goes into images (update.keyring); bundles are signed
 * with the signing key. Private keys are made 0600 before any byte is written.
 */
export async function initKeys(dir: string, o: { force?: boolean; subject?: string } = {}) {
  const k = keyPaths(dir);
  const existing = [k.caKey, k.caCert, k.key, k.cert].filter((f) => existsSync(f));
  if (existing.length && !o.force)
    throw new KilnError("KEYS_EXIST", `${existing[0]} already exists`, {
      hint: "keep it, or pass --force to make a new CA (devices trusting the old one will refuse new bundles)",
    });
  await mkdir(k.dir, { recursive: true, mode: 0o700 });
  const name = o.subject ?? "kiln development";
  for (const f of [k.caKey, k.key]) {
    await writeFile(f, "", { mode: 0o600 });
    await chmod(f, 0o600);
  }
  const ext = join(k.dir, ".signing.ext");
  try {
    await exec("openssl", [
      "req",
      "-x509",
      ...NEW_EC_KEY,
      "-keyout",
      k.caKey,
      "-out",
      k.caCert,
      "-days",
      "3650",
      "-subj",
      `/O=${name}/CN=${name} CA`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    const csr = join(k.dir, ".signing.csr");
    await exec("openssl", [
      "req",
      "-new",
      ...NEW_EC_KEY,
      "-keyout",
      k.key,
      "-out",
      csr,
      "-subj",
      `/O=${name}/CN=${name} update signing`,
    ]);
    await writeFile(
      ext,
      // No extendedKeyUsage: RAUC checks the S/MIME signing purpose by default, which codeSigning fails.
      "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    );
    await exec("openssl", [
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      k.caCert,
      "-CAkey",
      k.caKey,
      "-CAcreateserial",
      "-out",
      k.cert,
      "-days",
      "1825",
      "-extfile",
      ext,
    ]);
    await rm(csr, { force: true });
  } catch (err) {
    await Promise.all([k.caKey, k.caCert, k.key, k.cert].map((f) => rm(f, { force: true })));
    throw err;
  } finally {
    await rm(ext, { force: true });
    await rm(join(k.dir, "ca.cert.srl"), { force: true });
  }
  await chmod(k.caKey, 0o600);
  await chmod(k.key, 0o600);
  return k;
}

export interface AddonKeys {
  dir: string;
  key: string;
  pub: string;
}

export function addonKeyPaths(dir: string): AddonKeys {
  const d = resolve(dir);
  return { dir: d, key: join(d, "addons.key.pem"), pub: join(d, "addons.pub.pem") };
}

/**
 * The add-on signing key pair (EC P-256): `kiln addons sign` signs the add-on
 * list with the private key; the public key is the spec's agent.keyring, which
 * kiln-agent verifies the list against. Made with node:crypto, so signing
 * needs no openssl on the operator's machine; the device verifies with openssl.
 */
export async function initAddonKeys(dir: string, o: { force?: boolean } = {}): Promise<AddonKeys> {
  const k = addonKeyPaths(dir);
  const existing = [k.key, k.pub].filter((f) => existsSync(f));
  if (existing.length && !o.force)
    throw new KilnError("KEYS_EXIST", `${existing[0]} already exists`, {
      hint: "keep it, or pass --force to make a new pair (agents with the old public key will refuse lists it signs)",
    });
  await mkdir(k.dir, { recursive: true, mode: 0o700 });
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  await writeFile(k.key, "", { mode: 0o600 });
  await chmod(k.key, 0o600);
  await writeFile(k.key, privateKey.export({ type: "pkcs8", format: "pem" }));
  await writeFile(k.pub, publicKey.export({ type: "spki", format: "pem" }));
  return k;
}
