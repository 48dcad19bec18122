#!/usr/bin/env node
// Checked before kiln's code loads, in syntax any Node.js parses: an old
// Node.js would otherwise fail somewhere inside with an obscure error.
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  process.stderr.write(
    `kiln: needs Node.js 22.12 or newer (24 LTS recommended), found ${process.version} at ${process.execPath}\n` +
      "hint: ./scripts/setup installs Node.js 24 (/opt/kiln/node, linked from /usr/local/bin)\n",
  );
  process.exit(2);
}

/**
 * Exit once stdout and stderr have drained: a pipe takes 64 KiB at a time,
 * and process.exit() straight away would cut a long `--json` answer there.
 */
function exitAfterFlush(code) {
  let open = 2;
  for (const stream of [process.stdout, process.stderr]) {
    let done = false;
    const drained = () => {
      if (done) return;
      done = true;
      if (--open === 0) process.exit(code);
    };
    // A reader that went away (EPIPE) has nothing left to wait for.
    stream.once("error", drained);
    stream.write("", drained);
  }
}

import("../dist/cli/main.js").then(
  ({ main }) =>
    main(process.argv).then(exitAfterFlush, (err) => {
      console.error(err);
      exitAfterFlush(70);
    }),
  (err) => {
    process.stderr.write(`kiln: cannot load dist/ (${err.message})\nhint: npm run build\n`);
    process.exit(70);
  },
);
