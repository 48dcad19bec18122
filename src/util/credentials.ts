import { randomBytes, randomInt } from "node:crypto";
import { chmod, writeFile } from "node:fs/promises";
import { encrypt } from "unixcrypt";

/** A generated login: its plaintext only ever goes to the 0600 credentials file. */
export interface Credential {
  user: string;
  password: string;
}

// No look-alikes (0/O, 1/l/I) so a password read off a console can be typed.
const ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** A random password: 20 characters, about 117 bits. */
export function generatePassword(length = 20): string {
  let out = "";
  for (let i = 0; i < length; i++) out += ALPHABET[randomInt(ALPHABET.length)];
  return out;
}

export function randomSalt(length = 16): string {
  const bytes = randomBytes(length);
  let out = "";
  for (const b of bytes) out += SALT_ALPHABET[b % SALT_ALPHABET.length];
  return out;
}

/** SHA-512 crypt ($6$), the format /etc/shadow and `openssl passwd -6` use. */
export function hashPassword(plaintext: string, salt = randomSalt()): string {
  return encrypt(plaintext, `$6$${salt}`);
}

/** The one place plaintext passwords are written: `user:password` lines, mode 0600. */
export async function writeCredentials(file: string, credentials: Credential[]): Promise<void> {
  await writeFile(file, credentials.map((c) => `${c.user}:${c.password}\n`).join(""), {
    mode: 0o600,
  });
  // writeFile's mode only applies to a new file.
  await chmod(file, 0o600);
}
