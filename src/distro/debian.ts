import { registerDistro } from "./driver.js";

registerDistro({
  id: "debian",
  releases: ["bookworm", "trixie", "sid"],
  defaultMirror: () => "http://deb.debian.org/debian",
  components: ["main"],
  defaultKernel: (arch) => (arch === "amd64" ? "linux-image-cloud-amd64" : `linux-image-${arch}`),
  bootPackages: ["systemd-sysv", "udev", "kmod"],
});
