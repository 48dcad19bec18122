// A throwaway PostgreSQL server from Debian's package, for the fleet tests and
// benchmarks: initdb and pg_ctl in a temporary directory, listening only on a
// Unix socket there (which network namespaces share, as they share the
// filesystem); run as the `postgres` user, since PostgreSQL refuses root.
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function pgBin() {
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

/** @returns {{ url: string, create(name: string): string, stop(): void }} */
export function startPostgres() {
  const bin = pgBin();
  const dir = mkdtempSync(join(tmpdir(), "kiln-pg-"));
  chmodSync(dir, 0o755);
  const root = process.getuid?.() === 0;
  if (root) {
    const uid = Number(spawnSync("id", ["-u", "postgres"], { encoding: "utf8" }).stdout.trim());
    const gid = Number(spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout.trim());
    chownSync(dir, uid, gid);
  }
  const asPg = (cmd, args) => {
    const r = root
      ? spawnSync("runuser", ["-u", "postgres", "--", cmd, ...args], { encoding: "utf8" })
      : spawnSync(cmd, args, { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const data = join(dir, "data");
  asPg(join(bin, "initdb"), ["-D", data, "-A", "trust", "-U", "kiln", "--no-sync", "-E", "UTF8"]);
  asPg(join(bin, "pg_ctl"), [
    "-D",
    data,
    "-l",
    join(dir, "log"),
    "-w",
    "-o",
    `-c listen_addresses='' -c unix_socket_directories='${dir}' -c max_connections=64`,
    "start",
  ]);
  const create = (name) => {
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
