import type { Spec, User } from "../config/schema.js";
import { type Credential, generatePassword, hashPassword } from "../util/credentials.js";

/** An account as a seed carries it: never a plaintext, only a crypt(3) hash. */
export interface SeedUser {
  name: string;
  /** crypt(3) hash; undefined: password login stays locked. */
  hash?: string;
  groups: string[];
  shell: string;
  keys: string[];
}

export interface SeedAccounts {
  users: SeedUser[];
  root: { hash?: string; keys: string[] };
  /** Generated passwords: for the 0600 credentials file only. */
  credentials: Credential[];
}

/** Injected so golden tests get stable output; the defaults are the build's generator and SHA-512 crypt. */
export interface Secrets {
  generate(): string;
  hash(plaintext: string): string;
}

export const realSecrets: Secrets = {
  generate: () => generatePassword(),
  hash: (p) => hashPassword(p),
};

/**
 * The seed's accounts: `seed.users` when given, else the spec's users.
 * `password: generate` becomes a fresh password per call, hashed here.
 */
export function seedAccounts(spec: Spec, secrets: Secrets = realSecrets): SeedAccounts {
  const credentials: Credential[] = [];
  const resolve = (name: string, setting: string | undefined): string | undefined => {
    if (setting !== "generate") return setting;
    const password = secrets.generate();
    credentials.push({ user: name, password });
    return secrets.hash(password);
  };
  const users = (spec.seed?.users ?? spec.users).map((u: User) => {
    const hash = resolve(u.name, u.password);
    return {
      name: u.name,
      ...(hash ? { hash } : {}),
      groups: u.groups,
      shell: u.shell,
      keys: u.ssh_authorized_keys,
    };
  });
  const rootHash = resolve("root", spec.root.password);
  return {
    users,
    root: { ...(rootHash ? { hash: rootHash } : {}), keys: spec.root.ssh_authorized_keys },
    credentials,
  };
}

export function seedHostname(spec: Spec): string {
  return spec.seed?.hostname ?? spec.hostname;
}
