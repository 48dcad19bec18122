import {
  type Attached,
  type InstallRecord,
  type LastBoot,
  type LastReport,
  MACHINE_STATES,
  type MachineDetail,
  type MachineState,
  type MachineSummary,
  machineState,
} from "../fleet/store.js";

/**
 * The machines dashboard of `kiln serve`'s admin listener, as pure functions
 * from fleet data to HTML. Everything a machine can influence (facts, ids,
 * reports, failure texts) and everything else too goes through esc(): group
 * and profile names come from the inventory, but a page must not depend on
 * who wrote what. The pages load nothing but /dashboard.css and
 * /dashboard.js from the same listener (see CSP in admin.ts).
 */

/** What the inventory assigns a profile: its add-ons (signed list or inventory paths). */
export type AssignedAddons = (profile: string) => Attached[];

const ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Text or attribute value → HTML (all five special characters). */
export function esc(s: string | number | null | undefined): string {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ENTITIES[c]!);
}

const STATE_RANK: Record<MachineState, number> = {
  unmatched: 0,
  "install-failed": 1,
  failing: 1,
  installing: 2,
  reporting: 3,
  installed: 3,
  booted: 3,
};

/** Unmatched machines first, then failing ones, then the rest; newest seen first within each. */
export function orderMachines<T extends MachineSummary>(ms: readonly T[]): T[] {
  return [...ms].sort(
    (a, b) =>
      STATE_RANK[machineState(a)] - STATE_RANK[machineState(b)] ||
      (a.lastSeen < b.lastSeen ? 1 : a.lastSeen > b.lastSeen ? -1 : 0) ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
}

export interface AddonDrift {
  kind: string;
  name: string;
  /** What the agent last reported attached (undefined: not attached). */
  attached?: string;
  /** What the inventory assigns (undefined: not assigned). */
  assigned?: string;
  state: "ok" | "drift" | "missing" | "extra";
}

/** Attached add-ons against the assigned ones, by kind and name, sorted by name. */
export function addonDrift(
  attached: readonly Attached[],
  assigned: readonly Attached[],
): AddonDrift[] {
  const key = (a: Attached) => `${a.kind} ${a.name}`;
  const rows = new Map<string, AddonDrift>();
  for (const a of assigned)
    rows.set(key(a), { kind: a.kind, name: a.name, assigned: a.version, state: "missing" });
  for (const a of attached) {
    const r = rows.get(key(a));
    if (!r) rows.set(key(a), { kind: a.kind, name: a.name, attached: a.version, state: "extra" });
    else {
      r.attached = a.version;
      r.state = a.version === r.assigned ? "ok" : "drift";
    }
  }
  return [...rows.values()].sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : a.kind < b.kind ? -1 : 1,
  );
}

/** "2026-12-02T04:48:15.123Z" → "2026-12-02 04:48:15Z" (the full value in a title). */
function time(iso: string | null | undefined): string {
  if (!iso) return "—";
  const short = iso.replace("T", " ").replace(/\.\d+Z$/, "Z");
  return `<time datetime="${esc(iso)}" title="${esc(iso)}">${esc(short)}</time>`;
}

function dash(s: string | null | undefined): string {
  return s ? esc(s) : `<span class="none">—</span>`;
}

function machineLink(id: string): string {
  return `<a href="/machines/${esc(encodeURIComponent(id))}">${esc(id)}</a>`;
}

function addonCell(report: LastReport | null, assigned: readonly Attached[]): string {
  if (!report) {
    if (!assigned.length) return `<span class="none">—</span>`;
    return `<span class="none">no report; assigned</span> ${assigned
      .map((a) => `${esc(a.name)} ${esc(a.version)}`)
      .join(", ")}`;
  }
  const rows = addonDrift(report.attached, assigned);
  if (!rows.length) return `<span class="none">none</span>`;
  return `<ul class="addons">${rows
    .map((r) => {
      const name = `<span class="addon-name" title="${esc(r.kind)}">${esc(r.name)}</span>`;
      switch (r.state) {
        case "ok":
          return `<li class="ok">${name} ${esc(r.attached)}</li>`;
        case "drift":
          return `<li class="drift">${name} ${esc(r.attached)} → ${esc(r.assigned)} assigned</li>`;
        case "missing":
          return `<li class="drift">${name} not attached → ${esc(r.assigned)} assigned</li>`;
        default:
          return `<li class="extra">${name} ${esc(r.attached)} (not assigned)</li>`;
      }
    })
    .join("")}</ul>`;
}

function failures(report: LastReport | null): string {
  if (!report?.failed.length) return report && !report.ok ? "status failed" : "";
  return `<ul class="failed">${report.failed.map((f) => `<li>${esc(f)}</li>`).join("")}</ul>`;
}

function bootCell(b: LastBoot | null): string {
  if (!b) return `<span class="none">never</span>`;
  return `${time(b.at)}<br>${dash(b.artifact)} <span class="via">via ${esc(b.server)}</span>`;
}

/** An install to disk: its state, how far (percentage, rate) or why it failed. */
function installCell(i: InstallRecord | null): string {
  if (!i) return `<span class="none">-</span>`;
  const pct = i.total ? Math.min(100, Math.floor((i.bytes / i.total) * 100)) : 0;
  const mib = (n: number) => (n / 1048576).toFixed(1);
  if (i.state === "installing")
    return `<span class="install installing">installing ${pct}%</span> <span class="via">${mib(i.bytes)} of ${mib(i.total)} MiB, ${mib(i.rate)} MiB/s</span>`;
  if (i.state === "failed")
    return `<span class="install bad">failed</span> <span class="via">${esc(i.reason)}</span>`;
  return `<span class="install ok">installed</span> <span class="via">${dash(i.image)} ${time(i.finishedAt)}</span>`;
}

function stateBadge(s: MachineState): string {
  return `<span class="state state-${s}">${s}</span>`;
}

function counts(ms: readonly MachineSummary[]): string {
  const byState = new Map<MachineState, number>(MACHINE_STATES.map((s) => [s, 0]));
  const byGroup = new Map<string, number>();
  for (const m of ms) {
    const s = machineState(m);
    byState.set(s, (byState.get(s) ?? 0) + 1);
    const g = m.group ?? "";
    byGroup.set(g, (byGroup.get(g) ?? 0) + 1);
  }
  const groups = [...byGroup].sort(([a], [b]) => (a === "" ? 1 : b === "" ? -1 : a < b ? -1 : 1));
  return `<section class="counts">
<div class="count-box"><h2>${ms.length} machine${ms.length === 1 ? "" : "s"}</h2><ul>${MACHINE_STATES.map(
    (s) =>
      `<li class="state-count" data-state="${s}">${stateBadge(s)} <b>${byState.get(s)}</b></li>`,
  ).join("")}</ul></div>
<div class="count-box"><h2>By group</h2><ul>${
    groups.length
      ? groups
          .map(
            ([g, n]) =>
              `<li class="group-count">${g ? esc(g) : `<span class="none">(no group)</span>`} <b>${n}</b></li>`,
          )
          .join("")
      : `<li class="none">none yet</li>`
  }</ul></div>
</section>`;
}

/** The live part of `/`: counts and the machines table (what /?fragment=1 answers). */
export function renderFleetFragment(
  machines: readonly MachineSummary[],
  assigned: AssignedAddons,
): string {
  const rows = orderMachines(machines).map((m) => {
    const s = machineState(m);
    const want = m.profile ? assigned(m.profile) : [];
    return `<tr class="machine state-row-${s}" data-machine="${esc(m.id)}" data-state="${s}">
<td class="id">${machineLink(m.id)}</td><td>${dash(m.group)}</td><td>${dash(m.profile)}</td>
<td>${stateBadge(s)}</td><td>${bootCell(m.lastBoot)}</td><td>${installCell(m.install)}</td><td>${addonCell(m.report, want)}</td>
<td>${failures(m.report)}</td></tr>`;
  });
  return `${counts(machines)}
<table class="machines">
<thead><tr><th>Machine</th><th>Group</th><th>Profile</th><th>State</th><th>Last boot</th><th>Install</th><th>Add-ons (attached → assigned)</th><th>Agent failures</th></tr></thead>
<tbody>${rows.length ? rows.join("\n") : `<tr><td colspan="8" class="none">No machine has asked yet.</td></tr>`}</tbody>
</table>`;
}

/** The live part of `/machines/ID` (what /machines/ID?fragment=1 answers). */
export function renderMachineFragment(m: MachineDetail, assigned: AssignedAddons): string {
  const s = machineState(m);
  const want = m.profile ? assigned(m.profile) : [];
  const facts = Object.entries(m.facts).sort(([a], [b]) => (a < b ? -1 : 1));
  return `<section class="summary">
<dl>
<dt>State</dt><dd>${stateBadge(s)}</dd>
<dt>Group</dt><dd>${dash(m.group)}</dd>
<dt>Profile</dt><dd>${dash(m.profile)}</dd>
<dt>First seen</dt><dd>${time(m.firstSeen)}</dd>
<dt>Last seen</dt><dd>${time(m.lastSeen)}</dd>
<dt>Boot requests</dt><dd>${esc(m.requests)}</dd>
<dt>Add-ons</dt><dd>${addonCell(m.report, want)}</dd>
<dt>Agent failures</dt><dd>${failures(m.report) || `<span class="none">none</span>`}</dd>
<dt>Install</dt><dd>${installCell(m.install)}${
    m.install
      ? ` <form class="reinstall" method="post" action="/machines/${encodeURIComponent(m.id)}/reinstall"><button type="submit">Reinstall at next boot</button></form>`
      : ""
  }</dd>
</dl>
</section>
<h2>Facts</h2>
<table class="facts"><tbody>${
    facts.length
      ? facts.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join("")
      : `<tr><td class="none">none</td></tr>`
  }</tbody></table>
<h2>Boots <span class="note">(newest first)</span></h2>
<table class="boots"><thead><tr><th>At</th><th>Group</th><th>Profile</th><th>Artifact</th><th>Replica</th></tr></thead><tbody>${
    m.boots.length
      ? m.boots
          .map(
            (b) =>
              `<tr class="boot"><td>${time(b.at)}</td><td>${dash(b.group)}</td><td>${dash(b.profile)}</td><td>${dash(b.artifact)}</td><td>${esc(b.server)}</td></tr>`,
          )
          .join("")
      : `<tr><td colspan="5" class="none">none</td></tr>`
  }</tbody></table>
<h2>Installs <span class="note">(newest first)</span></h2>
<table class="installs"><thead><tr><th>At</th><th>State</th><th>Image</th><th>Seconds</th><th>Reason</th><th>Replica</th></tr></thead><tbody>${
    m.installs.length
      ? m.installs
          .map(
            (e) =>
              `<tr class="install-event"><td>${time(e.at)}</td><td>${esc(e.state)}</td><td>${dash(e.image)}</td><td>${dash(e.seconds === null ? null : String(e.seconds))}</td><td>${dash(e.reason)}</td><td>${esc(e.server)}</td></tr>`,
          )
          .join("")
      : `<tr><td colspan="6" class="none">none</td></tr>`
  }</tbody></table>
<h2>Agent reports <span class="note">(newest first)</span></h2>
<table class="reports"><thead><tr><th>At</th><th>Agent</th><th>From</th><th>Status</th><th>Attached</th><th>Failures</th></tr></thead><tbody>${
    m.reports.length
      ? m.reports
          .map(
            (r) =>
              `<tr class="report"><td>${time(r.at)}</td><td class="id">${esc(r.agent)}</td><td>${esc(r.from)}</td><td>${r.ok ? `<span class="ok">ok</span>` : `<span class="bad">failed</span>`}</td><td>${
                r.attached.map((a) => `${esc(a.name)} ${esc(a.version)}`).join(", ") ||
                `<span class="none">none</span>`
              }</td><td>${failures(r)}</td></tr>`,
          )
          .join("")
      : `<tr><td colspan="6" class="none">none</td></tr>`
  }</tbody></table>`;
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard.css">
<script src="/dashboard.js" defer></script>
</head><body>
${body}
</body></html>
`;
}

function header(crumb: string): string {
  return `<header><h1><a href="/">kiln</a> ${crumb}</h1><span id="live" class="live">static</span>
<form method="post" action="/logout"><button type="submit">Log out</button></form></header>`;
}

/** `/`: the fleet at a glance; its #fleet part is swapped in live. */
export function renderFleetPage(
  machines: readonly MachineSummary[],
  assigned: AssignedAddons,
  version: string,
): string {
  return page(
    "kiln machines",
    `${header("machines")}
<main id="fleet" data-fragment="/?fragment=1" data-version="${esc(version)}">
${renderFleetFragment(machines, assigned)}
</main>`,
  );
}

/** `/machines/ID`: one machine's facts, boots and reports; live like `/`. */
export function renderMachinePage(
  m: MachineDetail,
  assigned: AssignedAddons,
  version: string,
): string {
  const self = `/machines/${encodeURIComponent(m.id)}`;
  return page(
    `kiln: ${m.id}`,
    `${header(`<a href="/">machines</a> / <span class="id">${esc(m.id)}</span>`)}
<main id="machine" data-fragment="${esc(`${self}?fragment=1`)}" data-version="${esc(version)}">
${renderMachineFragment(m, assigned)}
</main>`,
  );
}

/** The login form, shown with 401 to a browser without the cookie. */
export function renderLoginPage(message = ""): string {
  return page(
    "kiln: log in",
    `<main class="login">
<h1>kiln admin</h1>
<p>Paste the admin token: the file <code>DB.admin-token</code> beside the fleet database
(<code>cat ~/.cache/kiln/machines.sqlite.admin-token</code>).</p>
${message ? `<p class="bad" role="alert">${esc(message)}</p>` : ""}
<form method="post" action="/login">
<label>Admin token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
<button type="submit">Log in</button>
</form>
</main>`,
  );
}

/** A small page for 404s and the like. */
export function renderMessagePage(title: string, text: string): string {
  return page(`kiln: ${title}`, `${header(esc(title))}<main><p>${esc(text)}</p></main>`);
}

export const DASHBOARD_CSS = `:root{color-scheme:light dark;--fg:#1d1f21;--bg:#fafafa;--muted:#777;--line:#ddd;--ok:#1a7f37;--bad:#c62828;--warn:#b26a00;--card:#fff}
@media (prefers-color-scheme:dark){:root{--fg:#e6e6e6;--bg:#17181a;--muted:#999;--line:#333;--card:#202124;--ok:#4cc36b;--bad:#ff6b6b;--warn:#f0a640}}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;align-items:center;gap:1em;padding:.6em 1.2em;border-bottom:1px solid var(--line);background:var(--card)}
header h1{font-size:1.1em;margin:0;flex:1}header form{margin:0}a{color:inherit}
main{padding:1em 1.2em}h2{font-size:1em;margin:1.2em 0 .4em}.note{color:var(--muted);font-weight:normal}
.counts{display:flex;gap:1em;flex-wrap:wrap}.count-box{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:.5em 1em}
.count-box h2{margin:.2em 0}.count-box ul{list-style:none;margin:0;padding:0;display:flex;gap:1.2em;flex-wrap:wrap}
table{border-collapse:collapse;width:100%;background:var(--card);margin-top:1em}th,td{text-align:left;vertical-align:top;padding:.35em .6em;border-bottom:1px solid var(--line)}
th{font-weight:600;color:var(--muted)}.machines td:nth-child(-n+5){white-space:nowrap}.id{font-family:ui-monospace,monospace}ul.addons,ul.failed{margin:0;padding:0;list-style:none}
.state{display:inline-block;padding:0 .5em;border-radius:1em;font-size:.85em;border:1px solid currentColor}
.state-unmatched{color:var(--warn)}.state-failing{color:var(--bad)}.state-reporting{color:var(--ok)}.state-booted{color:var(--muted)}
.ok{color:var(--ok)}.bad,ul.failed{color:var(--bad)}.drift{color:var(--warn);font-weight:600}.extra{color:var(--muted)}
.none,.via{color:var(--muted)}.live{font-size:.8em;color:var(--muted)}.live.on{color:var(--ok)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dt{color:var(--muted)}dd{margin:0}
table.facts{width:auto}.login{max-width:32em;margin:3em auto}.login input{display:block;width:100%;margin:.4em 0 .8em;padding:.4em}
`;

/**
 * The pages' one script: follow /events (the fleet's change counter) and,
 * when it moves past what the page shows, fetch the page's fragment and swap
 * it in. The fragment is the server's escaped HTML; nothing else is inserted.
 */
export const DASHBOARD_JS = `"use strict";
(() => {
  const root = document.querySelector("[data-fragment]");
  const live = document.getElementById("live");
  if (!root || !window.EventSource) return;
  let busy = false;
  let again = false;
  const refresh = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await fetch(root.dataset.fragment, { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { location.reload(); return; }
      if (r.ok) {
        root.innerHTML = await r.text();
        root.dataset.version = r.headers.get("X-Kiln-Version") || "";
      }
    } catch (e) {
      // The next event tries again.
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  };
  const es = new EventSource("/events");
  es.addEventListener("version", (e) => {
    if (e.data !== root.dataset.version) refresh();
  });
  es.onopen = () => { if (live) { live.textContent = "live"; live.className = "live on"; } };
  es.onerror = () => {
    // CLOSED: refused (e.g. 503, too many pages open); the browser does not try again.
    if (live) { live.textContent = es.readyState === EventSource.CLOSED ? "not live: reload" : "reconnecting…"; live.className = "live"; }
  };
})();
`;
