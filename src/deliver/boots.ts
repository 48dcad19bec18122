import { randomBytes } from "node:crypto";
import type { Facts } from "./inventory.js";

/** What one boot request was told: its own facts, group and profile. */
export interface Boot {
  facts: Facts;
  group: string;
  profile: string;
}

/** 128 random bits, hex: the name of one boot's metadata and cloud-init data. */
export const BOOT_TOKEN = /^[0-9a-f]{32}$/;

/**
 * Per-boot tokens. The iPXE script handed to a machine names its metadata
 * and cloud-init URLs by a fresh random token bound to what *that* request
 * claimed, so a later request claiming other facts for the same MAC cannot
 * change what this boot is told. Bounded: the oldest tokens go first, and
 * none lives longer than `ttlMs` (a boot fetches its metadata within
 * minutes; a reboot asks for a new script and gets a new token).
 */
export class BootTokens {
  private readonly byToken = new Map<string, Boot & { ms: number }>();
  // Issue order, oldest at `head`: expiry and eviction take from the front of
  // this array. (Taking the oldest from the Map itself walks past every
  // deleted entry V8 has not compacted yet: thousands once the table is full.)
  private order: string[] = [];
  private head = 0;
  // Random bytes drawn 4 KiB at a time: one call per 256 tokens, not one each.
  private pool = Buffer.alloc(0);
  private poolAt = 0;

  constructor(
    private readonly max: number,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  issue(boot: Boot): string {
    const token = this.random();
    this.expire();
    while (this.byToken.size >= this.max) this.dropOldest();
    this.byToken.set(token, { ...boot, facts: { ...boot.facts }, ms: this.now() });
    this.order.push(token);
    return token;
  }

  get(token: string): Boot | undefined {
    if (!BOOT_TOKEN.test(token)) return undefined;
    this.expire();
    const b = this.byToken.get(token);
    return b && { facts: { ...b.facts }, group: b.group, profile: b.profile };
  }

  get size(): number {
    return this.byToken.size;
  }

  private random(): string {
    if (this.poolAt + 16 > this.pool.length) {
      this.pool = randomBytes(4096);
      this.poolAt = 0;
    }
    const t = this.pool.toString("hex", this.poolAt, this.poolAt + 16);
    this.poolAt += 16;
    return t;
  }

  private dropOldest(): void {
    this.byToken.delete(this.order[this.head++]!);
    // Compact now and then, so the array holds about what the table does.
    if (this.head > 1024 && this.head * 2 > this.order.length) {
      this.order = this.order.slice(this.head);
      this.head = 0;
    }
  }

  private expire(): void {
    const cutoff = this.now() - this.ttlMs;
    while (this.head < this.order.length) {
      const b = this.byToken.get(this.order[this.head]!);
      if (b && b.ms >= cutoff) break;
      this.dropOldest();
    }
  }
}
