import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  deferredPattern,
  moduleClosure,
  modulesToDefer,
  neededModules,
  parseAliases,
  parseSoftdeps,
  unpackKept,
} from "../../src/builder/steps/modules.js";
import { parseModulesDep } from "../../src/builder/steps/netboot.js";
import { keepModulesPolicy, specSchema } from "../../src/config/schema.js";
import { planBuild } from "../../src/plan/plan.js";
import { extractTree } from "../../src/util/tar.js";

// A small modules.dep in the kernel's own format (paths relative to /usr/lib/modules/VER).
const DEP = `kernel/drivers/virtio/virtio.ko.zst:
kernel/drivers/virtio/virtio_ring.ko.zst:
kernel/drivers/virtio/virtio_pci.ko.zst: kernel/drivers/virtio/virtio_pci_modern_dev.ko.zst kernel/drivers/virtio/virtio.ko.zst kernel/drivers/virtio/virtio_ring.ko.zst
kernel/drivers/virtio/virtio_pci_modern_dev.ko.zst:
kernel/drivers/net/virtio_net.ko.zst: kernel/drivers/net/net_failover.ko.zst kernel/net/core/failover.ko.zst kernel/drivers/virtio/virtio.ko.zst kernel/drivers/virtio/virtio_ring.ko.zst
kernel/drivers/net/net_failover.ko.zst: kernel/net/core/failover.ko.zst
kernel/net/core/failover.ko.zst:
kernel/drivers/md/raid1.ko.zst: kernel/drivers/md/md-mod.ko.zst
kernel/drivers/md/md-mod.ko.zst:
kernel/drivers/char/hw_random/virtio-rng.ko.zst: kernel/drivers/virtio/virtio.ko.zst kernel/drivers/virtio/virtio_ring.ko.zst
kernel/fs/btrfs/btrfs.ko.zst: kernel/lib/libcrc32c.ko.zst
kernel/lib/libcrc32c.ko.zst:
kernel/crypto/xxhash_generic.ko.zst:
kernel/drivers/gpu/drm/drm.ko.zst:
`;

const tables = {
  dep: parseModulesDep(DEP),
  builtin: new Set(["ext4", "crc32c_generic"]),
  softdep: parseSoftdeps(
    "# comment\nsoftdep btrfs pre: xxhash64 crypto-crc32c\nsoftdep libcrc32c pre: crc32c\n",
  ),
  alias: parseAliases("alias xxhash64 xxhash_generic\nalias pci:v00001AF4d* virtio_pci\n"),
};

describe("kernel module closure", () => {
  it("keeps every wanted module and its dependencies, transitively, each once", () => {
    const { keep, unknown } = moduleClosure(["virtio_net", "virtio_pci"], tables);
    expect([...keep].sort()).toEqual([
      "kernel/drivers/net/net_failover.ko.zst",
      "kernel/drivers/net/virtio_net.ko.zst",
      "kernel/drivers/virtio/virtio.ko.zst",
      "kernel/drivers/virtio/virtio_pci.ko.zst",
      "kernel/drivers/virtio/virtio_pci_modern_dev.ko.zst",
      "kernel/drivers/virtio/virtio_ring.ko.zst",
      "kernel/net/core/failover.ko.zst",
    ]);
    expect(unknown).toEqual([]);
  });

  it("matches - and _ alike (md-mod.ko, virtio-rng.ko)", () => {
    const { keep } = moduleClosure(["raid1", "virtio_rng"], tables);
    expect(keep).toContain("kernel/drivers/md/md-mod.ko.zst");
    expect(keep).toContain("kernel/drivers/char/hw_random/virtio-rng.ko.zst");
  });

  it("follows soft dependencies, through aliases; built-in ones need nothing", () => {
    const { keep, unknown } = moduleClosure(["btrfs"], tables);
    expect([...keep].sort()).toEqual([
      "kernel/crypto/xxhash_generic.ko.zst",
      "kernel/fs/btrfs/btrfs.ko.zst",
      "kernel/lib/libcrc32c.ko.zst",
    ]);
    // crypto-crc32c and crc32c resolve to nothing here: a soft dependency is not an error.
    expect(unknown).toEqual([]);
  });

  it("names what is neither a module nor built in", () => {
    const { keep, unknown } = moduleClosure(["ext4", "no_such_mod"], tables);
    expect(keep.size).toBe(0);
    expect(unknown).toEqual(["no_such_mod"]);
  });

  it("parses softdep lines with pre: and post:", () => {
    expect(parseSoftdeps("softdep vfio post: a b\nsoftdep x pre: c post: d\n")).toEqual(
      new Map([
        ["vfio", ["a", "b"]],
        ["x", ["c", "d"]],
      ]),
    );
  });
});

describe("kernel.keep_modules and kernel.extra_modules", () => {
  it("default: needed with the minimal profile, all with the standard one", () => {
    expect(keepModulesPolicy(specSchema.parse({ name: "m" }))).toBe("needed");
    expect(keepModulesPolicy(specSchema.parse({ name: "s", profile: "standard" }))).toBe("all");
    const all = specSchema.parse({ name: "a", kernel: { keep_modules: "all" } });
    expect(keepModulesPolicy(all)).toBe("all");
    expect(() => specSchema.parse({ name: "x", kernel: { keep_modules: "some" } })).toThrow();
    expect(() => specSchema.parse({ name: "x", kernel: { extra_modules: ["a b"] } })).toThrow();
  });

  it("needs the hardware, filesystem and initrd modules, and what layout, outputs and extras add", () => {
    const plain = neededModules(specSchema.parse({ name: "p" }));
    for (const m of ["virtio_blk", "virtio_net", "ena", "gve", "hv_netvsc", "vfat", "nls_cp437"])
      expect(plain).toContain(m);
    expect(plain).not.toContain("dm_verity");
    expect(plain).not.toContain("raid1");
    const ab = neededModules(
      specSchema.parse({
        name: "ab",
        disk: { layout: "ab" },
        outputs: ["iso", "qcow2"],
        kernel: { extra_modules: ["wireguard", "kvm-intel"] },
      }),
    );
    expect(ab).toEqual(
      expect.arrayContaining(["dm_verity", "usb_storage", "wireguard", "kvm_intel"]),
    );
    expect(neededModules(specSchema.parse({ name: "r", disk: { layout: "raid1" } }))).toContain(
      "raid1",
    );
  });

  it("the plan says the kernel step keeps only the needed modules", () => {
    const title = (k: object) =>
      planBuild(specSchema.parse({ name: "t", kernel: k }), "{}").steps.find(
        (s) => s.id === "kernel",
      )!.title;
    expect(title({})).toBe("kernel (needed modules only) and tiny initrd");
    expect(title({ keep_modules: "all" })).toBe("kernel and tiny initrd");
  });
});

describe("the cached root unpacked without the modules it drops", () => {
  it("leaves the newest kernel's kernel/ tree in the tar and unpacks only what is kept", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kiln-mods-"));
    try {
      const src = join(dir, "src");
      const files = [
        "boot/vmlinuz-6.1.0-1",
        "boot/vmlinuz-6.1.0-2",
        "usr/lib/modules/6.1.0-2/modules.dep",
        "usr/lib/modules/6.1.0-2/kernel/drivers/net/virtio_net.ko",
        "usr/lib/modules/6.1.0-2/kernel/drivers/gpu/drm.ko",
        "usr/lib/modules/6.1.0-1/kernel/drivers/net/virtio_net.ko",
        "etc/motd",
      ];
      for (const f of files) {
        mkdirSync(dirname(join(src, f)), { recursive: true });
        writeFileSync(join(src, f), f.endsWith("drm.ko") ? "x".repeat(1000) : f);
      }
      const tar = join(dir, "root.tar");
      execFileSync("tar", ["-C", src, "-cf", tar, "."]);
      const spec = specSchema.parse({ name: "t", profile: "minimal" });
      const plan = planBuild(spec, "{}");
      const d = await modulesToDefer({ spec, plan }, tar);
      expect(d).toMatchObject({ version: "6.1.0-2", dir: "./usr/lib/modules/6.1.0-2/kernel/" });
      const root = join(dir, "root");
      mkdirSync(root);
      await extractTree(tar, root, {}, { exclude: [deferredPattern(d!)] });
      expect(existsSync(join(root, "etc/motd"))).toBe(true);
      expect(existsSync(join(root, "usr/lib/modules/6.1.0-2/modules.dep"))).toBe(true);
      expect(existsSync(join(root, "usr/lib/modules/6.1.0-2/kernel"))).toBe(false);
      // An older kernel's modules are not the step's to prune: unpacked as they are.
      expect(
        existsSync(join(root, "usr/lib/modules/6.1.0-1/kernel/drivers/net/virtio_net.ko")),
      ).toBe(true);
      const r = await unpackKept(
        { root, work: dir },
        d!,
        new Set(["kernel/drivers/net/virtio_net.ko"]),
      );
      expect(r).toEqual({ dropped: ["kernel/drivers/gpu/drm.ko"], droppedBytes: 1000 });
      expect(
        readFileSync(
          join(root, "usr/lib/modules/6.1.0-2/kernel/drivers/net/virtio_net.ko"),
          "utf8",
        ),
      ).toBe("usr/lib/modules/6.1.0-2/kernel/drivers/net/virtio_net.ko");
      expect(existsSync(join(root, "usr/lib/modules/6.1.0-2/kernel/drivers/gpu"))).toBe(false);
      // A spec with its own file in the module tree unpacks everything.
      const own = specSchema.parse({
        name: "t",
        profile: "minimal",
        files: [{ path: "/usr/lib/modules/extra.conf", content: "" }],
      });
      expect(await modulesToDefer({ spec: own, plan: planBuild(own, "{}") }, tar)).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
