import { describe, expect, it } from "vitest";
import { runArgv } from "../../src/cli/run.js";
import { parseRef } from "../../src/containers/store.js";
import { KilnError } from "../../src/util/errors.js";

describe("image references", () => {
  it("split name and tag as docker does", () => {
    expect(parseRef("debian:bookworm")).toEqual({ name: "debian", tag: "bookworm" });
    expect(parseRef("debian")).toEqual({ name: "debian", tag: "latest" });
    expect(parseRef("127.0.0.1:5000/team/app:1.0")).toEqual({
      name: "127.0.0.1:5000/team/app",
      tag: "1.0",
    });
    expect(parseRef("127.0.0.1:5000/team/app")).toEqual({
      name: "127.0.0.1:5000/team/app",
      tag: "latest",
    });
    expect(() => parseRef("Bad Name:x")).toThrow(KilnError);
  });
});

describe("kiln run arguments", () => {
  const argv = (...a: string[]) => ["node", "kiln", ...a];
  it("give everything after the image to the command", () => {
    expect(runArgv(argv("run", "--rm", "-e", "A=1", "debian", "sh", "-c", "exit 3"))).toEqual(
      argv("run", "--rm", "-e", "A=1", "debian", "--", "sh", "-c", "exit 3"),
    );
    expect(runArgv(argv("run", "-v", "/a:/b", "-w", "/b", "img", "ls", "-l"))).toEqual(
      argv("run", "-v", "/a:/b", "-w", "/b", "img", "--", "ls", "-l"),
    );
  });
  it("leave other verbs and explicit -- alone", () => {
    expect(runArgv(argv("build", "x.yaml", "-o", "run"))).toEqual(
      argv("build", "x.yaml", "-o", "run"),
    );
    expect(runArgv(argv("run", "img", "--", "ls"))).toEqual(argv("run", "img", "--", "ls"));
  });
});
