import {
  convertWorkflowTemplate,
  NoOperationTraceWriter,
  parseWorkflow,
} from "@actions/workflow-parser";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { GITHUB_ASSET_LIMIT, githubWorkflow } from "../../src/publish/github.js";

const SPECS = [
  { path: "examples/minimal.yaml", name: "minimal" },
  { path: "examples/netboot.yaml", name: "netboot" },
  { path: "specs/iso.yaml", name: "iso" },
];
const opts = { install: "npm install -g kiln@0.1.0", assetLimitBytes: GITHUB_ASSET_LIMIT };

/** GitHub's own workflow parser and schema, as github.com runs them. */
async function validate(text: string) {
  const r = parseWorkflow({ name: "kiln.yml", content: text }, new NoOperationTraceWriter());
  const errors = r.context.errors.getErrors().map((e) => e.message);
  const template = await convertWorkflowTemplate(r.context, r.value!);
  return { errors: [...errors, ...(template.errors ?? []).map((e) => e.Message)], template };
}

describe("kiln ci: the GitHub Actions workflow", () => {
  it("passes GitHub's workflow parser, one build job per spec, the release after all of them", async () => {
    const text = githubWorkflow(SPECS, opts);
    const { errors, template } = await validate(text);
    expect(errors).toEqual([]);
    expect(template.jobs.map((j) => j.id.value)).toEqual(["build", "release"]);
    const release = template.jobs[1] as { needs?: { value: string }[] };
    expect(release.needs?.map((n) => n.value)).toEqual(["build"]);
    const y = parse(text);
    expect(y.jobs.build.strategy.matrix.include).toEqual(
      SPECS.map((s) => ({ spec: s.path, name: s.name })),
    );
    expect(y.jobs.release.needs).toEqual(["build"]);
    // The outputs go up without the generated passwords; the key comes from a secret.
    const upload = y.jobs.build.steps.find((s: { uses?: string }) =>
      s.uses?.startsWith("actions/upload-artifact"),
    );
    expect(upload.with.path).toContain("!out/**/credentials");
    const sign = y.jobs.release.steps[1];
    expect(sign.env.KILN_RELEASE_KEY).toBe("${{ secrets.KILN_RELEASE_KEY }}");
    expect(sign.run).toContain("openssl dgst -sha256 -sign");
    expect(sign.run).toContain(`-gt ${GITHUB_ASSET_LIMIT} ]`);
    // No spec path ever lands in a run line: they are read from the matrix through env.
    for (const step of y.jobs.build.steps)
      for (const s of SPECS) expect(step.run ?? "").not.toContain(s.path);
  });

  it("the parser itself catches a broken workflow (the check can fail)", async () => {
    const text = githubWorkflow(SPECS, opts).replace("runs-on:", "runs-onn:");
    expect((await validate(text)).errors.length).toBeGreaterThan(0);
  });

  it("refuses spec paths that could carry expressions or shell, clashing names, and none", () => {
    for (const path of ["a/${{ github.token }}.yaml", "x;rm -rf.yaml", "../up.yaml", "sp ace.yaml"])
      expect(() => githubWorkflow([{ path, name: "x" }], opts)).toThrow(
        /CI_SPEC_PATH|may hold only/,
      );
    expect(() =>
      githubWorkflow(
        [
          { path: "a.yaml", name: "x" },
          { path: "b.yaml", name: "x" },
        ],
        opts,
      ),
    ).toThrow(/share a name/);
    expect(() => githubWorkflow([], opts)).toThrow(/no specs/);
  });
});
