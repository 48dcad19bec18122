import { registerDistro } from "./driver.js";

// Ubuntu keeps amd64 on archive.ubuntu.com and other architectures on ports.
// Not booted on kiln's CI machines (no route to the mirrors); its generated
// mmdebstrap configuration is unit-tested.
registerDistro({
  id: "ubuntu",
  releases: ["jammy", "noble", "questing"],
  defaultMirror: (arch) =>
    arch === "amd64" ? "http://archive.ubuntu.com/ubuntu" : "http://ports.ubuntu.com/ubuntu-ports",
  components: ["main", "universe"],
  keyring: "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
  defaultKernel: () => "linux-image-virtual",
  bootPackages: ["systemd-sysv", "udev", "kmod"],
});
