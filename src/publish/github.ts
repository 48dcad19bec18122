import { stringify } from "yaml";
import { KilnError } from "../util/errors.js";

/** One spec of the repository: its path and the name of its build (the output directory). */
export interface CiSpec {
  path: string;
  name: string;
}

export interface CiOptions {
  /** How the runner gets kiln (a shell line run before `kiln doctor --install`). */
  install: string;
  /** Largest file a release may hold; bigger ones are split (GitHub: 2 GiB). */
  assetLimitBytes: number;
}

export const GITHUB_ASSET_LIMIT = 2 * 1024 ** 3;

// Paths and names go into the workflow as data only (a matrix, read through
// env), never into a run line, yet are kept to a plain set so that no
// expression or shell text can ride in on a file name.
const SAFE_PATH = /^[A-Za-z0-9._/-]+$/;
const SAFE_NAME = /^[a-z0-9][a-z0-9._-]*$/;

/**
 * A GitHub Actions workflow for a repository of specs: one build job per
 * spec (matrix) that installs kiln and its host tools, restores kiln's apt
 * and root filesystem caches keyed on the spec's lock (or the spec), builds,
 * runs `kiln test` on every target the build allows (KVM where the runner
 * has it, TCG otherwise: kiln probes) and uploads the outputs without their
 * credentials; on a tag, a release job that gathers every build, splits
 * files over the host's limit into parts, writes SHA256SUMS, signs it with
 * the key in the KILN_RELEASE_KEY secret and publishes the release.
 */
export function githubWorkflow(specs: CiSpec[], o: CiOptions): string {
  if (!specs.length)
    throw new KilnError("CI_NO_SPECS", "no specs to build", {
      hint: "name the specs: kiln ci SPEC...",
    });
  for (const s of specs) {
    if (!SAFE_PATH.test(s.path) || s.path.includes(".."))
      throw new KilnError(
        "CI_SPEC_PATH",
        `${s.path}: a spec path in a workflow may hold only letters, digits and . _ / -`,
      );
    if (!SAFE_NAME.test(s.name))
      throw new KilnError("CI_SPEC_PATH", `${s.path}: its name ${s.name} is not a plain name`);
  }
  const names = new Set(specs.map((s) => s.name));
  if (names.size !== specs.length)
    throw new KilnError("CI_SPEC_PATH", "two specs share a name: their outputs would collide");
  const partBytes = Math.floor(o.assetLimitBytes / 1024 ** 2) - 1;
  const workflow = {
    name: "kiln",
    on: {
      push: { branches: ["main"], tags: ["v*"] },
      pull_request: {},
      workflow_dispatch: {},
    },
    permissions: { contents: "read" },
    jobs: {
      build: {
        name: "build ${{ matrix.name }}",
        "runs-on": "ubuntu-24.04",
        "timeout-minutes": 90,
        strategy: {
          "fail-fast": false,
          matrix: { include: specs.map((s) => ({ spec: s.path, name: s.name })) },
        },
        env: { SPEC: "${{ matrix.spec }}", NAME: "${{ matrix.name }}" },
        steps: [
          { uses: "actions/checkout@v4" },
          { uses: "actions/setup-node@v4", with: { "node-version": 24 } },
          {
            name: "install kiln and its host tools",
            run: `${o.install}\nsudo env "PATH=$PATH" kiln doctor --install`,
          },
          {
            name: "restore kiln's apt and root filesystem caches",
            uses: "actions/cache@v4",
            with: {
              path: "~/.cache/kiln-ci",
              key: "kiln-${{ matrix.name }}-${{ hashFiles(format('{0}.lock', matrix.spec), matrix.spec) }}",
              "restore-keys": "kiln-${{ matrix.name }}-",
            },
          },
          {
            name: "build",
            run: 'sudo env "PATH=$PATH" "KILN_CACHE=$HOME/.cache/kiln-ci" kiln build "$SPEC" -o "out/$NAME"',
          },
          {
            name: "test on every target the outputs allow",
            run: 'sudo env "PATH=$PATH" "KILN_CACHE=$HOME/.cache/kiln-ci" kiln test "out/$NAME" --junit "out/$NAME.junit.xml"',
          },
          {
            name: "upload the outputs (never the credentials)",
            uses: "actions/upload-artifact@v4",
            with: {
              name: "${{ matrix.name }}",
              path: "out/${{ matrix.name }}\nout/${{ matrix.name }}.junit.xml\n!out/**/credentials",
              "if-no-files-found": "error",
            },
          },
        ],
      },
      release: {
        needs: ["build"],
        if: "startsWith(github.ref, 'refs/tags/')",
        "runs-on": "ubuntu-24.04",
        permissions: { contents: "write" },
        steps: [
          { uses: "actions/download-artifact@v4", with: { path: "gathered" } },
          {
            name: "gather, split what is over the limit, sum and sign",
            env: { KILN_RELEASE_KEY: "${{ secrets.KILN_RELEASE_KEY }}" },
            run: [
              "set -eu",
              "mkdir release",
              "find gathered -type f ! -name credentials -exec mv -t release {} +",
              "cd release",
              `# Files over the host's limit become NAME.part00, NAME.part01, …: cat NAME.part* > NAME joins them.`,
              "for f in *; do",
              `  if [ "$(stat -c %s "$f")" -gt ${o.assetLimitBytes} ]; then`,
              `    sha256sum "$f" >> WHOLE.SHA256SUMS`,
              `    split -b ${partBytes}M -d -a 2 "$f" "$f.part" && rm "$f"`,
              "  fi",
              "done",
              "sha256sum -- * > SHA256SUMS",
              'printf "%s\\n" "$KILN_RELEASE_KEY" > "$RUNNER_TEMP/release.key.pem"',
              'openssl dgst -sha256 -sign "$RUNNER_TEMP/release.key.pem" -out SHA256SUMS.sig SHA256SUMS',
              'rm -f "$RUNNER_TEMP/release.key.pem"',
            ].join("\n"),
          },
          {
            name: "publish",
            env: { GH_TOKEN: "${{ github.token }}" },
            run: 'gh release create "$GITHUB_REF_NAME" --repo "$GITHUB_REPOSITORY" --generate-notes release/*',
          },
        ],
      },
    },
  };
  return `# Written by kiln ci: one build job per spec, a release job on tags.\n${stringify(workflow, { lineWidth: 0 })}`;
}
