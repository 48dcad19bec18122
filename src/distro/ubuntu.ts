import { registerDistro } from "./driver.js";

// Ubuntu keeps amd64 on archive.ubuntu.com (security fixes on security.ubuntu.com)
// and other architectures on ports (security fixes there too). Not booted on
// kiln's CI machines (no route to the mirrors); its generated mmdebstrap
// configuration is unit-tested.
registerDistro({
  id: "ubuntu",
  releases: ["jammy", "noble", "questing"],
  defaultMirror: (arch) =>
    arch === "amd64" ? "http://archive.ubuntu.com/ubuntu" : "http://ports.ubuntu.com/ubuntu-ports",
  components: ["main", "universe"],
  keyring: "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
  defaultKernel: () => "linux-image-virtual",
  bootPackages: ["systemd-sysv", "udev", "kmod"],
  // dbus (dbus-daemon) is what Ubuntu's own images run and is in main on every release.
  busPackages: ["dbus"],
  groupPackages: { sudo: "sudo" },
  inertGroups: { wheel: "Ubuntu's sudo grants group sudo; wheel means nothing here" },
  sources: (c) => {
    const out = [{ uri: c.mirror, suite: c.release, components: c.components }];
    if (c.updates)
      out.push({ uri: c.mirror, suite: `${c.release}-updates`, components: c.components });
    if (c.security)
      out.push({
        uri:
          c.securityMirror ??
          (c.arch === "amd64"
            ? "http://security.ubuntu.com/ubuntu"
            : "http://ports.ubuntu.com/ubuntu-ports"),
        suite: `${c.release}-security`,
        components: c.components,
      });
    return out;
  },
});
