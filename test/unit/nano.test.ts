import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { checkLibraries } from "../../src/builder/steps/nano.js";
import { loadSpec } from "../../src/config/load.js";
import { packageManagerRemoval, pamModulesNamed, parseDpkgStatus } from "../../src/distro/prune.js";
import { neededLibraries } from "../../src/util/elf.js";
import { KilnError, SpecError } from "../../src/util/errors.js";

// The dpkg status of a real build of examples/minimal.yaml (bookworm), descriptions cut.
const STATUS = readFileSync(join(import.meta.dirname, "fixtures/dpkg-status-minimal"), "utf8");
const dir = mkdtempSync(join(tmpdir(), "kiln-nano-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("profile nano: what goes with the package manager", () => {
  const installed = parseDpkgStatus(STATUS);

  it("reads every installed package with its relations", () => {
    expect(installed.length).toBeGreaterThan(100);
    const ssh = installed.find((p) => p.name === "openssh-server")!;
    expect(ssh.deps).toContainEqual(["adduser"]);
    expect(ssh.provides).toContain("ssh-server");
    expect(installed.find((p) => p.name === "bash")!.essential).toBe(true);
  });

  it("removes apt, dpkg, debconf, perl and the libraries only they used; keeps what programs use", () => {
    const { remove, kept } = packageManagerRemoval(installed, ["openssh-server"]);
    expect(remove).toEqual(
      expect.arrayContaining(["apt", "dpkg", "debconf", "perl-base", "libapt-pkg6.0"]),
    );
    // apt's TLS stack and C++ runtime: nothing else depends on them.
    expect(remove).toEqual(expect.arrayContaining(["libgnutls30", "libstdc++6", "libxxhash0"]));
    const keptNames = kept.map((p) => p.name);
    // systemd links p11-kit, coreutils gmp, PAM libdb: they stay though apt used them too.
    for (const p of ["libc6", "libssl3", "libp11-kit0", "libgmp10", "libdb5.3", "openssh-server"])
      expect(keptNames).toContain(p);
    expect(remove.length + kept.length).toBe(installed.length);
  });

  it("keeps a package manager part the spec asks for", () => {
    expect(packageManagerRemoval(installed, ["gpgv"]).remove).not.toContain("gpgv");
  });

  it("refuses when a kept package runs perl", () => {
    const withPerlTool = `${STATUS}\nPackage: needs-perl\nStatus: install ok installed\nVersion: 1\nDepends: perl:any, libc6\n`;
    expect(() => packageManagerRemoval(parseDpkgStatus(withPerlTool), [])).toThrow(
      /needs-perl needs perl at run time/,
    );
  });

  it("a spec that lists a part of the package manager is an error at its line", () => {
    const f = join(dir, "nano-apt.yaml");
    writeFileSync(f, "name: n\nprofile: nano\npackages:\n  - openssh-server\n  - apt\n");
    let err: unknown;
    try {
      loadSpec(f);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SpecError);
    const d = (err as SpecError).diagnostics[0]!;
    expect(d.loc).toMatchObject({ line: 5, column: 5 });
    expect(d.message).toMatch(/profile nano removes the package manager, and apt is part of it/);
  });
});

describe("profile nano: every program left finds its libraries", () => {
  it("finds the PAM modules pam.d names, by name or path, not in comments", () => {
    const named = pamModulesNamed([
      "# session optional pam_mail.so standard\n@include common-auth\n",
      "auth [success=1 default=ignore] pam_unix.so nullok\naccount required /usr/lib/x86_64-linux-gnu/security/pam_access.so\nsession optional pam_systemd.so # pam_userdb.so\n",
    ]);
    expect([...named].sort()).toEqual(["pam_access.so", "pam_systemd.so", "pam_unix.so"]);
  });

  it("reads DT_NEEDED from an ELF file and nothing from a text file", async () => {
    expect(await neededLibraries("/usr/bin/true")).toContain("libc.so.6");
    expect(await neededLibraries("/etc/os-release")).toBeUndefined();
  });

  it("fails the build when a program's library is gone, and passes once it is there", async () => {
    const root = join(dir, "root");
    mkdirSync(join(root, "usr/bin"), { recursive: true });
    copyFileSync("/usr/bin/true", join(root, "usr/bin/true"));
    const err = await checkLibraries(root).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KilnError);
    expect((err as KilnError).code).toBe("PROFILE_NANO");
    expect((err as Error).message).toMatch(/\/usr\/bin\/true needs libc\.so\.6/);
    mkdirSync(join(root, "usr/lib/x86_64-linux-gnu"), { recursive: true });
    for (const n of (await neededLibraries("/usr/bin/true"))!)
      writeFileSync(join(root, "usr/lib/x86_64-linux-gnu", n), "");
    await expect(checkLibraries(root)).resolves.toBeUndefined();
  });
});
