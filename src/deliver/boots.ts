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

  constructor(
    private readonly max: number,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  issue(boot: Boot): string {
    const token = randomBytes(16).toString("hex");
    this.expire();
    while (this.byToken.size >= this.max) {
      const first = this.byToken.keys().next().value!;
      this.byToken.delete(first);
    }
    this.byToken.set(token, { ...boot, facts: { ...boot.facts }, ms: this.now() });
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

  private expire(): void {
    const cutoff = this.now() - this.ttlMs;
    for (const [t, b] of this.byToken) {
      if (b.ms >= cutoff) break;
      this.byToken.delete(t);
    }
  }
}
