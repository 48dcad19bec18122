import { type ExecOptions, exec } from "../util/exec.js";

const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Run a program of the image inside its root (offline configuration: useradd, systemctl, depmod). */
export function inRoot(root: string, cmd: string, args: string[], opts: ExecOptions = {}) {
  return exec("chroot", [root, cmd, ...args], {
    ...opts,
    // The host's temporary directory is not the image's (mktemp in mkinitramfs
    // and friends would fail on a TMPDIR that does not exist inside the root).
    env: {
      PATH,
      LC_ALL: "C.UTF-8",
      SYSTEMD_OFFLINE: "1",
      TMPDIR: undefined,
      TMP: undefined,
      TEMP: undefined,
      ...opts.env,
    },
  });
}
