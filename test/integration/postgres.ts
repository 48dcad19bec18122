import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";

/**
 * A throwaway PostgreSQL server from Debian's package: initdb and pg_ctl in
 * a temporary directory, listening only on a Unix socket there (which
 * network namespaces share, as they share the filesystem). Run as the
 * `postgres` user, since PostgreSQL refuses to run as root.
 */
export interface TempPostgres {
  /** postgres:// URL of the database `kiln`, through the socket. */
  url: string;
  /** A new empty database on the same server, and its URL. */
  create(name: string): string;
  stop(): void;
}

function pgBin(): string {
  const base = "/usr/lib/postgresql";
  const v = existsSync(base)
    ? readdirSync(base)
        .filter((d) => existsSync(join(base, d, "bin/initdb")))
        .sort((a, b) => Number(b) - Number(a))[0]
    : undefined;
  if (!v)
    throw new Error("PostgreSQL is not installed (scripts/test installs Debian's postgresql)");
  return join(base, v, "bin");
}

export function startPostgres(): TempPostgres {
  const bin = pgBin();
  const dir = mkdtempSync(join(tmpdir(), "kiln-pg-"));
  chmodSync(dir, 0o755);
  const pw =
    userInfo().uid === 0 ? spawnSync("id", ["-u", "postgres"], { encoding: "utf8" }) : undefined;
  const asPg = (cmd: string, args: string[]) => {
    const r =
      userInfo().uid === 0
        ? spawnSync("runuser", ["-u", "postgres", "--", cmd, ...args], { encoding: "utf8" })
        : spawnSync(cmd, args, { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  if (pw) {
    const uid = Number(pw.stdout.trim());
    chownSync(dir, uid, uid);
  }
  const data = join(dir, "data");
  asPg(join(bin, "initdb"), ["-D", data, "-A", "trust", "-U", "kiln", "--no-sync", "-E", "UTF8"]);
  asPg(join(bin, "pg_ctl"), [
    "-D",
    data,
    "-l",
    join(dir, "log"),
    "-w",
    "-o",
    `-c listen_addresses='' -c unix_socket_directories='${dir}' -c fsync=off -c max_connections=64`,
    "start",
  ]);
  const create = (name: string) => {
    asPg(join(bin, "createdb"), ["-h", dir, "-U", "kiln", name]);
    return `postgres://kiln@/${name}?host=${encodeURIComponent(dir)}`;
  };
  return {
    url: create("kiln"),
    create,
    stop: () => {
      try {
        asPg(join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"]);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
