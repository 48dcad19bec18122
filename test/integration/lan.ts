import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { ConsoleWatcher } from "../../src/runtime/console.js";
import { until } from "./helpers.js";

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/**
 * A test network made of namespaces: a bridge (in its own namespace) that
 * hosts join with a veth pair and QEMU clients with a tap. Everything it
 * starts and makes is undone by `close()`.
 */
export class Lan {
  readonly ns: string;
  private readonly hosts: string[] = [];
  private readonly procs: ChildProcess[] = [];
  private taps = 0;

  constructor(
    readonly tag: string,
    private readonly out: string,
  ) {
    this.ns = `${tag}-lan`;
    sh("ip", ["netns", "add", this.ns]);
    sh("ip", ["-n", this.ns, "link", "add", "br0", "type", "bridge"]);
    sh("ip", ["-n", this.ns, "link", "set", "br0", "up"]);
  }

  /** A namespace on the bridge with `eth0` at `cidr` (e.g. 10.78.0.2/24); returns its name. */
  host(name: string, cidr: string): string {
    const ns = `${this.tag}-${name}`;
    sh("ip", ["netns", "add", ns]);
    this.hosts.push(ns);
    const v = `v${name}`.slice(0, 15);
    sh("ip", [
      "-n",
      this.ns,
      "link",
      "add",
      v,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      ns,
    ]);
    sh("ip", ["-n", this.ns, "link", "set", v, "master", "br0", "up"]);
    sh("ip", ["-n", ns, "addr", "add", cidr, "dev", "eth0"]);
    sh("ip", ["-n", ns, "link", "set", "eth0", "up"]);
    sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
    return ns;
  }

  /** Run `cmd` in namespace `ns` in the background; output goes to `onData`. */
  run(ns: string, cmd: string, args: string[], onData?: (s: string) => void): ChildProcess {
    const p = spawn("ip", ["netns", "exec", ns, cmd, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    p.stdout?.on("data", (b: Buffer) => onData?.(b.toString()));
    p.stderr?.on("data", (b: Buffer) => onData?.(b.toString()));
    this.procs.push(p);
    return p;
  }

  /** Commands of the processes in namespace `ns` (comm names). */
  processes(ns: string): string[] {
    const pids = spawnSync("ip", ["netns", "pids", ns], { encoding: "utf8" })
      .stdout.split("\n")
      .filter(Boolean);
    return pids.flatMap((p) => {
      const r = spawnSync("ps", ["-o", "comm=", "-p", p], { encoding: "utf8" });
      return r.status === 0 ? [r.stdout.trim()] : [];
    });
  }

  /**
   * A network-booting QEMU client (TCG) on a new tap; resolves with its console
   * once `done()` says so (or its console matches `until`), then powers it off.
   */
  async client(o: {
    mac: string;
    serial?: string;
    firmware?: "bios" | "uefi";
    /** Raw disk image files, attached as virtio disks in this order. */
    disks?: string[];
    done: (console: string) => boolean | Promise<boolean>;
    timeoutMs?: number;
  }): Promise<string> {
    const tap = `tap${++this.taps}`;
    sh("ip", ["-n", this.ns, "tuntap", "add", tap, "mode", "tap"]);
    sh("ip", ["-n", this.ns, "link", "set", tap, "master", "br0", "up"]);
    const args = [
      "-machine",
      "q35",
      "-accel",
      "tcg,thread=single",
      "-m",
      "512",
      "-nodefaults",
      "-nographic",
      "-serial",
      "stdio",
      "-netdev",
      `tap,id=n0,ifname=${tap},script=no,downscript=no`,
      // The network first, as a PXE-installed rack is set up; the disks after (what iPXE's exit falls back to).
      "-device",
      `virtio-net-pci,netdev=n0,mac=${o.mac},bootindex=1`,
      "-smbios",
      `type=1,serial=${o.serial ?? "KILN-TEST"}`,
      "-device",
      "virtio-rng-pci",
    ];
    for (const [i, d] of (o.disks ?? []).entries())
      args.push(
        "-drive",
        `file=${d},format=raw,if=none,id=disk${i}`,
        "-device",
        `virtio-blk-pci,drive=disk${i},bootindex=${i + 2}`,
      );
    if (o.firmware === "uefi") {
      const vars = join(this.out, `vars-${tap}.fd`);
      copyFileSync("/usr/share/OVMF/OVMF_VARS_4M.fd", vars);
      args.push(
        "-drive",
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "-drive",
        `if=pflash,format=raw,unit=1,file=${vars}`,
        // OVMF's own PXE would follow iPXE in the boot order, each with its DHCP timeouts,
        // before the disk; a rack set up for iPXE then disk has them off.
        "-fw_cfg",
        "name=opt/org.tianocore/IPv4PXESupport,string=n",
        "-fw_cfg",
        "name=opt/org.tianocore/IPv6PXESupport,string=n",
      );
    }
    const w = new ConsoleWatcher();
    const q = this.run(this.ns, "qemu-system-x86_64", args, (t) => w.feed(t));
    try {
      let ok = false;
      await until(
        `client ${o.mac}`,
        async () => {
          ok = await o.done(w.output);
          return ok || q.exitCode !== null;
        },
        o.timeoutMs ?? 180_000,
      );
      if (!ok) throw new Error(`client ${o.mac} ended early:\n${w.tail(30)}`);
      return w.output;
    } finally {
      q.kill("SIGKILL");
    }
  }

  close(): void {
    for (const p of this.procs) if (p.exitCode === null) p.kill("SIGTERM");
    spawnSync("sleep", ["1"]);
    for (const p of this.procs) if (p.exitCode === null) p.kill("SIGKILL");
    for (const ns of [...this.hosts, this.ns]) {
      // Whatever is still in a namespace (a server's children) goes with it.
      for (const pid of spawnSync("ip", ["netns", "pids", ns], { encoding: "utf8" })
        .stdout.split("\n")
        .filter(Boolean))
        spawnSync("kill", ["-9", pid]);
      spawnSync("ip", ["netns", "del", ns]);
    }
  }
}
