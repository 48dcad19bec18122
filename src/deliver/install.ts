import { createHash } from "node:crypto";
import { createReadStream, readFileSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { isAbsolute, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import type { FleetStore } from "../fleet/store.js";
import { send } from "../util/http-files.js";
import type { Boot } from "./boots.js";
import type { Inventory } from "./inventory.js";

type Profile = Inventory["profiles"][string];

/** The disk image a profile installs, from its build's manifest.json. */
export interface InstallImage {
  file: string;
  label: string;
  bytes: number;
  sha256: string;
}

/** A run of MiB blocks of the image that are not all zeros, and its sha256. */
export interface Extent {
  startMiB: number;
  countMiB: number;
  sha256: string;
}

const MIB = 1 << 20;

/**
 * The image's data: runs of 1 MiB blocks holding anything but zeros. A built
 * disk is mostly empty filesystem space (the minimal example: 158 of 436
 * MiB hold data), so only these go on the wire and are read back; the
 * installer writes the rest as zeros from its own /dev/zero.
 */
export async function dataExtents(file: string, bytes: number): Promise<Extent[]> {
  const out: Extent[] = [];
  const zero = Buffer.alloc(MIB);
  const buf = Buffer.alloc(MIB);
  const f = await open(file, "r");
  try {
    let run: { start: number; count: number; hash: ReturnType<typeof createHash> } | undefined;
    const close = () => {
      if (run)
        out.push({ startMiB: run.start, countMiB: run.count, sha256: run.hash.digest("hex") });
      run = undefined;
    };
    for (let block = 0; block * MIB < bytes; block++) {
      const { bytesRead } = await f.read(buf, 0, MIB, block * MIB);
      if (bytesRead !== MIB) throw new Error(`${file}: short read at MiB ${block}`);
      if (buf.equals(zero)) {
        close();
        continue;
      }
      run ??= { start: block, count: 0, hash: createHash("sha256") };
      run.count++;
      run.hash.update(buf);
    }
    close();
  } finally {
    await f.close();
  }
  return out;
}

const SHA = /^[0-9a-f]{64}$/;

/**
 * Install to disk: the server side. A machine whose profile says `install:`
 * boots the profile's netboot bundle as its installer with
 * `kiln.install=URL/install/TOKEN`; the installer reads its plan there
 * (image URL, size, sha256, target, overwrite, after), streams the image
 * (gzip on the wire), reports progress and the result. Once the fleet
 * database says installed, the machine's boot script boots its disk until an
 * operator asks for a reinstall (`kiln machines reinstall ID`).
 */
export class InstallService {
  private images = new Map<string, { key: string; image: InstallImage }>();
  private extents = new Map<string, { key: string; extents: Promise<Extent[]> }>();

  /** The image's data extents, computed once per file version. */
  private extentsOf(img: InstallImage): Promise<Extent[]> {
    const st = statSync(img.file);
    const key = `${st.size}:${st.mtimeMs}:${img.sha256}`;
    const hit = this.extents.get(img.file);
    if (hit?.key === key) return hit.extents;
    const extents = dataExtents(img.file, img.bytes);
    if (this.extents.size > 64) this.extents.clear();
    this.extents.set(img.file, { key, extents });
    extents.catch(() => this.extents.delete(img.file));
    return extents;
  }

  constructor(
    private readonly fleet: FleetStore,
    private readonly inventoryDir: string,
    private readonly publicUrl: string,
    private readonly server: () => string,
  ) {}

  /** The image of `profile.install`, or a reason it cannot be installed. */
  image(profile: Profile): InstallImage | string {
    const dir = profile.install!.image;
    const out = isAbsolute(dir) ? dir : join(this.inventoryDir, dir);
    const mf = join(out, "manifest.json");
    let key: string;
    try {
      const st = statSync(mf);
      key = `${st.size}:${st.mtimeMs}`;
    } catch {
      return `${out} has no manifest.json (a kiln build output directory with a disk output)`;
    }
    const hit = this.images.get(out);
    if (hit?.key === key) return hit.image;
    try {
      const m = JSON.parse(readFileSync(mf, "utf8")) as {
        name: string;
        version: string;
        artifacts: { format: string; path: string; size: number; sha256: string }[];
      };
      const disk = m.artifacts.find((a) => a.format === "disk");
      if (!disk || !SHA.test(disk.sha256) || !/^[A-Za-z0-9._-]+$/.test(disk.path))
        return `${out} has no raw disk output (add disk to the spec's outputs)`;
      if (disk.size % MIB !== 0 || disk.size <= 0)
        return `${join(out, disk.path)} is not a whole number of MiB`;
      const image = {
        file: join(out, disk.path),
        label: `${m.name} ${m.version}`,
        bytes: disk.size,
        sha256: disk.sha256,
      };
      if (this.images.size > 256) this.images.clear();
      this.images.set(out, { key, image });
      return image;
    } catch (err) {
      return `${mf}: ${(err as Error).message}`;
    }
  }

  /** A machine already installed boots its own disk: BIOS by drive, UEFI by leaving iPXE. */
  static localBootScript(id: string): string {
    return [
      "#!ipxe",
      `echo kiln: ${id} is installed; booting from its disk`,
      "iseq ${platform} efi && goto efi ||",
      "sanboot --no-describe --drive 0x80 || goto efi",
      ":efi",
      "exit",
      "",
    ].join("\n");
  }

  /** GET /install/TOKEN/plan: what the installer writes, where, and how it checks it. */
  async plan(res: ServerResponse, token: string, boot: Boot, profile: Profile): Promise<void> {
    const img = this.image(profile);
    if (typeof img === "string") return void send(res, 503, `${img}\n`);
    const i = profile.install!;
    await this.fleet.recordInstall({
      machine: boot.facts.mac ?? boot.facts.uuid!,
      start: true,
      state: "installing",
      image: img.label,
      total: img.bytes,
      server: this.server(),
    });
    let extents: Extent[];
    try {
      extents = await this.extentsOf(img);
    } catch (err) {
      return void send(res, 503, `${img.file}: ${(err as Error).message}\n`);
    }
    const base = `${this.publicUrl}/install/${token}`;
    const lines = [
      "kiln-install 1",
      `name ${img.label.replace(" ", " version ")}`,
      `image ${base}/image.gz`,
      `bytes ${img.bytes}`,
      `sha256 ${img.sha256}`,
      `target ${i.target}`,
      `overwrite ${i.overwrite ? 1 : 0}`,
      `after ${i.after}`,
      `progress ${base}/progress`,
      `result ${base}/result`,
      ...extents.map((e) => `extent ${e.startMiB} ${e.countMiB} ${e.sha256}`),
    ];
    send(res, 200, `${lines.join("\n")}\n`, { "Content-Type": "text/plain" });
  }

  /**
   * GET /install/TOKEN/image.gz: the image's data extents, in the plan's
   * order, one after another, gzip on the wire; never whole in memory.
   */
  async stream(req: IncomingMessage, res: ServerResponse, profile: Profile): Promise<void> {
    const img = this.image(profile);
    if (typeof img === "string") return void send(res, 503, `${img}\n`);
    const extents = await this.extentsOf(img);
    res.writeHead(200, { "Content-Type": "application/gzip", "Cache-Control": "no-store" });
    if (req.method === "HEAD") return void res.end();
    const file = img.file;
    async function* data() {
      for (const e of extents)
        yield* createReadStream(file, {
          start: e.startMiB * MIB,
          end: (e.startMiB + e.countMiB) * MIB - 1,
          highWaterMark: MIB,
        });
    }
    // Level 1: filesystem data and metadata; the wire, not the ratio, matters.
    await pipeline(Readable.from(data()), createGzip({ level: 1 }), res).catch(() => {
      res.destroy();
    });
  }

  /**
   * POST /install/TOKEN/progress?bytes=N&rate=R and
   * /install/TOKEN/result?state=installed|failed&reason=TEXT: everything in
   * the query (no body is read), every number and word checked.
   */
  async update(
    res: ServerResponse,
    url: URL,
    boot: Boot,
    profile: Profile,
    kind: "progress" | "result",
  ): Promise<void> {
    const machine = boot.facts.mac ?? boot.facts.uuid!;
    const num = (k: string) => {
      const v = url.searchParams.get(k);
      return v !== null && /^\d{1,15}$/.test(v) ? Number(v) : undefined;
    };
    const bytes = num("bytes");
    const rate = num("rate");
    if (kind === "progress") {
      if (bytes === undefined) return void send(res, 400, "bytes=N needed\n");
      await this.fleet.recordInstall({
        machine,
        state: "installing",
        bytes,
        ...(rate !== undefined ? { rate } : {}),
        server: this.server(),
      });
      return void send(res, 204, "");
    }
    const state = url.searchParams.get("state");
    if (state !== "installed" && state !== "failed")
      return void send(res, 400, "state=installed or state=failed needed\n");
    // Shown on a page and in a terminal: printable ASCII only, bounded.
    const reason = (url.searchParams.get("reason") ?? "").replace(/[^ -~]/g, "?").slice(0, 300);
    const img = this.image(profile);
    await this.fleet.recordInstall({
      machine,
      state,
      ...(bytes !== undefined ? { bytes } : {}),
      ...(rate !== undefined ? { rate } : {}),
      reason: state === "failed" ? reason || "the installer gave no reason" : null,
      ...(typeof img !== "string" ? { image: img.label } : {}),
      server: this.server(),
    });
    send(res, 204, "");
  }
}
