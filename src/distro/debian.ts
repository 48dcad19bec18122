import { registerDistro } from "./driver.js";

/** Releases that have no -updates or -security suite (they move every day). */
const ROLLING = new Set(["sid", "unstable"]);

registerDistro({
  id: "debian",
  releases: ["bookworm", "trixie", "sid"],
  defaultMirror: () => "http://deb.debian.org/debian",
  components: ["main"],
  // The cloud flavour (virtio, no desktop hardware) exists for amd64 and arm64 alike.
  defaultKernel: (arch) => `linux-image-cloud-${arch}`,
  bootPackages: ["systemd-sysv", "udev", "kmod"],
  // dbus-broker (436 KB) rather than dbus-daemon (dbus, dbus-bin, dbus-daemon, libdbus: ~1.2 MB);
  // both use dbus-system-bus-common's policy, and dbus-broker is systemd's own choice.
  busPackages: ["dbus-broker"],
  groupPackages: { sudo: "sudo" },
  inertGroups: { wheel: "Debian's sudo grants group sudo; wheel means nothing here" },
  sources: (c) => {
    const out = [{ uri: c.mirror, suite: c.release, components: c.components }];
    if (ROLLING.has(c.release)) return out;
    if (c.updates)
      out.push({ uri: c.mirror, suite: `${c.release}-updates`, components: c.components });
    // Security fixes come from their own archive, not the mirror network's main one.
    if (c.security)
      out.push({
        uri: c.securityMirror ?? "http://deb.debian.org/debian-security",
        suite: `${c.release}-security`,
        components: c.components,
      });
    return out;
  },
});
