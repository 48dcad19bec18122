import { describe, expect, it } from "vitest";
import { runArgv } from "../../src/cli/run.js";
import { type ContainerRecord, checkName, statusText } from "../../src/containers/instances.js";
import { loopbackRegistry, parseOciSource } from "../../src/containers/oci.js";
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

describe("OCI sources", () => {
  it("docker:// keeps the registry in the name; oci: names the image after the layout", () => {
    expect(parseOciSource("docker://127.0.0.1:5000/kiln/app:1.0")).toEqual({
      transport: "docker",
      ref: { name: "127.0.0.1:5000/kiln/app", tag: "1.0" },
      url: "docker://127.0.0.1:5000/kiln/app:1.0",
    });
    expect(parseOciSource("oci:/srv/out/App.oci:1.0.0")).toMatchObject({
      transport: "oci",
      dir: "/srv/out/App.oci",
      tag: "1.0.0",
      ref: { name: "app", tag: "1.0.0" },
    });
    expect(parseOciSource("oci:/srv/x.oci")).toMatchObject({ tag: "latest" });
    expect(parseOciSource("debian:bookworm")).toBeUndefined();
  });
  it("treats only registries on this machine as plain HTTP", () => {
    expect(loopbackRegistry("127.0.0.1:5000/kiln/app")).toBe(true);
    expect(loopbackRegistry("localhost/app")).toBe(true);
    expect(loopbackRegistry("registry.example.org/app")).toBe(false);
  });
});

describe("containers", () => {
  const rec: ContainerRecord = {
    name: "c",
    image: "debian:bookworm",
    command: ["true"],
    boot: false,
    created: "2026-01-01T00:00:00.000Z",
    status: "exited",
    exitCode: 3,
    finished: "2026-01-01T00:02:00.000Z",
    autoRemove: false,
  };
  it("describe their state in docker's words", () => {
    expect(statusText(rec, Date.parse("2026-01-01T00:05:00Z"))).toBe("Exited (3) 3 minutes ago");
    expect(statusText({ ...rec, status: "running", pid: process.pid })).toMatch(/^Up /);
    // A record that says running, whose kiln process is gone.
    expect(statusText({ ...rec, status: "running", pid: 2 ** 22 + 1 })).toMatch(/^Dead/);
  });
  it("accept docker's container names only", () => {
    expect(() => checkName("web-1.a_b")).not.toThrow();
    expect(() => checkName("../etc")).toThrow(/Invalid container name/);
    expect(() => checkName("-x")).toThrow(KilnError);
  });
});
