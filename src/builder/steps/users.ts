import { chmod, chown, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { inertGroups } from "../../plan/recipe.js";
import { generatePassword, hashPassword } from "../../util/credentials.js";
import { log } from "../../util/log.js";
import { inRoot } from "../chroot.js";
import type { BuildContext } from "../context.js";

/**
 * Accounts. Generated passwords exist in plaintext only in memory and in the
 * 0600 credentials file; the image gets the SHA-512 crypt hash.
 */
export async function usersStep(ctx: BuildContext): Promise<void> {
  const { root, spec } = ctx;
  const groups = new Set(spec.users.flatMap((u) => u.groups));
  // Groups that imply a package got it in the root filesystem (group sudo: sudo); these imply nothing.
  for (const w of inertGroups(spec)) log.warn(w);
  for (const g of groups) {
    await inRoot(root, "sh", ["-c", 'getent group "$1" >/dev/null || groupadd "$1"', "sh", g]);
  }
  for (const u of spec.users) {
    const args = ["--create-home", "--shell", u.shell, "--user-group"];
    if (u.groups.length) args.push("--groups", u.groups.join(","));
    if (u.uid !== undefined) args.push("--uid", String(u.uid));
    await inRoot(root, "useradd", [...args, u.name]);
    await setPassword(ctx, u.name, u.password);
    await authorizeKeys(ctx, u.name, `/home/${u.name}`, u.ssh_authorized_keys);
  }
  // Root stays locked unless the spec gives it a password.
  await setPassword(ctx, "root", spec.root.password);
  await authorizeKeys(ctx, "root", "/root", spec.root.ssh_authorized_keys);
}

async function setPassword(
  ctx: BuildContext,
  user: string,
  setting: string | undefined,
): Promise<void> {
  let hash = "!";
  if (setting === "generate") {
    const password = generatePassword();
    ctx.credentials.push({ user, password });
    hash = hashPassword(password);
  } else if (setting) {
    hash = setting;
  }
  // usermod -p puts the hash in /etc/shadow as is; it never sees a plaintext.
  await inRoot(ctx.root, "usermod", ["-p", hash, user]);
}

async function authorizeKeys(
  ctx: BuildContext,
  user: string,
  home: string,
  keys: string[],
): Promise<void> {
  if (!keys.length) return;
  const dir = join(ctx.root, home, ".ssh");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, "authorized_keys");
  await writeFile(file, `${keys.join("\n")}\n`, { mode: 0o600 });
  await chmod(dir, 0o700);
  const { stdout } = await inRoot(ctx.root, "id", ["-u", user]);
  const { stdout: gid } = await inRoot(ctx.root, "id", ["-g", user]);
  await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  await chown(file, Number(stdout.trim()), Number(gid.trim()));
}
