// BMFL dashboard: three read-only pages rendered from the cloud's own JSON API, refreshed
// by polling. Every request goes to this origin (the page's CSP allows nothing else).
"use strict";

const POLL_MS = 3000;
const roundCache = new Map(); // "task/round" -> round record (finished rounds never change)

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const fix = (x, d = 4) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));
const short = (a) => (a && a.length > 14 ? `${a.slice(0, 8)}…${a.slice(-4)}` : a || "—");

// wei amounts exceed 2^53: quote them before parsing and keep them as BigInt
async function getJSON(path) {
  const reply = await fetch(path, { headers: { Accept: "application/json" } });
  if (!reply.ok) throw new Error(`${path}: HTTP ${reply.status}`);
  const text = (await reply.text()).replace(/("[a-z_]*_wei"\s*:\s*)(\d+)/g, '$1"$2"');
  return JSON.parse(text, (key, value) => (key.endsWith("_wei") && typeof value === "string" ? BigInt(value) : value));
}

function eth(wei) {
  const w = BigInt(wei), unit = 10n ** 18n;
  const frac = ((w % unit) / 10n ** 12n).toString().padStart(6, "0");
  return `<span data-wei="${w}" title="${w} wei">${w / unit}.${frac}</span>`;
}

const cidLink = (cid) => (cid ? `<a class="mono" href="/ipfs/${encodeURIComponent(cid)}" title="${esc(cid)}">${esc(short(cid))}</a>` : "—");
const cards = (pairs) => `<dl class="cards">${pairs.map(([k, v, id]) => `<div><dt>${esc(k)}</dt><dd${id ? ` id="${id}"` : ""}>${v}</dd></div>`).join("")}</dl>`;
let notes = 0;
function table(caption, heads, rows, attrs = "") {
  const numeric = (h) => /^(#|round|accuracy|loss|ε|selected|received|flagged|credited|claimed|outstanding|block|accepted|θ)/i.test(h);
  const th = heads.map((h) => { // a heading is a label, or [label, class] ("wide": hidden on a phone)
    const [label, cls] = Array.isArray(h) ? h : [h, numeric(h) ? "num" : ""];
    return `<th scope="col"${cls ? ` class="${cls}"` : ""}>${esc(label)}</th>`;
  }).join("");
  const body = rows.length ? rows.join("") : `<tr><td colspan="${heads.length}">none yet</td></tr>`;
  const note = `note-${++notes}`; // the explanation stays on screen while a wide table scrolls sideways
  return `<p class="caption" id="${note}">${esc(caption)}</p><div class="scroll"><table ${attrs} aria-describedby="${note}"><thead><tr>${th}</tr></thead><tbody>${body}</tbody></table></div>`;
}
const section = (id, title, html) => `<section aria-labelledby="${id}"><h2 id="${id}">${esc(title)}</h2>${html}</section>`;

// --- Tasks -------------------------------------------------------------------------------
async function tasksPage() {
  const tasks = await getJSON("/tasks");
  const rows = tasks.map((t) => `<tr data-task="${t.task_id}">
    <td class="num"><a href="/ui/tasks/${t.task_id}">${t.task_id}</a></td><td>${esc(t.status)}</td>
    <td class="num">${t.rounds_finished} / ${t.chain.max_rounds}</td>
    <td class="num" data-field="accuracy">${t.accuracy.length ? fix(t.accuracy[t.accuracy.length - 1]) : "—"}</td>
    <td class="num">${eth(t.chain.escrow_wei)}</td><td class="mono">${esc(t.chain.publisher)}</td></tr>`);
  return `<h1>Tasks</h1>${cards([["tasks", String(tasks.length), "task-count"], ["running", String(tasks.filter((t) => t.status === "running").length)]])}
    ${section("tasks-h", "Published tasks", table("Each task published to this cloud; open one for its rounds and money.", ["#", "status", "rounds", "accuracy", "escrow (ETH)", "publisher"], rows, 'id="tasks"'))}`;
}

// --- Task --------------------------------------------------------------------------------
async function roundRecord(taskId, r) {
  const key = `${taskId}/${r}`;
  if (!roundCache.has(key)) roundCache.set(key, await getJSON(`/tasks/${taskId}/rounds/${r}`));
  return roundCache.get(key);
}

function drawChart(view) {
  const el = document.getElementById("chart");
  if (!el || !window.Plotly) return;
  const x = view.rounds.map((r) => r.round);
  const traces = [
    { x, y: view.rounds.map((r) => r.accuracy), name: "accuracy", mode: "lines+markers", line: { color: "#0b5cad" } },
    { x, y: view.rounds.map((r) => r.loss), name: "loss", mode: "lines+markers", yaxis: "y2", line: { color: "#c05600", dash: "dot" } },
  ];
  const layout = {
    margin: { l: 50, r: 50, t: 10, b: 40 }, legend: { orientation: "h", y: 1.12 }, font: { size: 12 },
    xaxis: { title: { text: "round" }, dtick: 1, range: [0.5, Math.max(view.chain.max_rounds, 1) + 0.5] },
    yaxis: { title: { text: "global accuracy" }, range: [0, 1] },
    yaxis2: { title: { text: "loss" }, overlaying: "y", side: "right", rangemode: "tozero" },
  };
  window.Plotly.react(el, traces, layout, { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["toImage"] });
}

async function taskPage(taskId) {
  const v = await getJSON(`/tasks/${taskId}`);
  const records = await Promise.all(v.rounds.map((r) => roundRecord(taskId, r.round)));
  const last = v.rounds.length ? v.rounds[v.rounds.length - 1] : null;
  const live = v.current ? `round ${v.current.round}: ${v.current.received}/${v.current.selected} uploads` : "—";
  const head = `<h1>Task ${v.task_id}: ${esc(v.status)}</h1><p>${esc(v.detail)}</p>` + cards([
    ["rounds finished", `${v.rounds_finished} / ${v.chain.max_rounds}`, "round-count"],
    ["last accuracy", last ? fix(last.accuracy) : "—", "last-accuracy"],
    ["training now", esc(live)], ["ETA", v.eta_s === null ? "—" : `${Math.round(v.eta_s)} s`],
    ["chain phase", esc(`${v.chain.status} · ${v.chain.phase}`)], ["escrow (ETH)", eth(v.chain.escrow_wei)],
    ["ε max", fix(v.epsilon_max, 2)], ["bytes moved", v.bytes_moved.toLocaleString("en")],
  ]);
  const chart = section("chart-h", "Accuracy and loss by round",
    `<div id="chart" class="chart" role="img" aria-label="Line chart of global accuracy and loss per round; the table below lists the same values."></div>`);
  const roundRows = v.rounds.map((r, i) => `<tr data-round="${r.round}"><td class="num">${r.round}</td><td class="num">${fix(r.accuracy)}</td>
    <td class="num">${fix(r.loss)}</td><td>${r.leader_edge === null ? "no quorum" : `edge ${r.leader_edge}`}</td>
    <td class="mono">${r.consensus_scores.map((s, e) => `e${e}: ${fix(s, 3)}`).join(", ") || "—"}</td>
    <td class="num">${r.selected ?? "—"}</td><td class="num">${r.received ?? "—"}</td><td class="num">${r.flagged}</td>
    <td>${cidLink(records[i].global_cid)}${r.rolled_back_to === null ? "" : `<br><span class="bad" data-refused="${r.rolled_back_to}">refused: round ${r.rolled_back_to}'s model kept</span>`}</td>
    <td>${Object.entries(records[i].edges || {}).map(([e, c]) => `e${esc(e)}: ${cidLink(c.preliminary_cid)}`).join("<br>") || "—"}</td></tr>`);
  const rounds = section("rounds-h", "Rounds", table("Leader, consensus scores (median accuracy other edges gave each edge's model) and vehicles per round; CIDs open the blob from this cloud's gateway. A round whose global model fell too far below the best so far is marked refused: the best model was recorded again.",
    ["round", "accuracy", "loss", "leader", "consensus scores", "selected", "received", "flagged", "global model", "edge models"], roundRows, 'id="rounds"'));
  const trainerRows = records.flatMap((rec) => rec.trainers.map((t) => `<tr><td class="num">${rec.round}</td>
    <td class="mono">${esc(short(t.address))}</td><td class="${t.malicious ? "bad" : "ok"}">${t.malicious ? "flagged: Λ under threshold, θ = 0, no payout" : "accepted"}</td>
    <td class="num">${fix(t.theta, 3)}</td><td class="num wide">${fix(t.reliability, 3)}</td><td class="num">${t.epsilon === null ? "—" : fix(t.epsilon, 2)}</td></tr>`));
  const trainers = section("trainers-h", "Vehicles per round", table("Every update the edges received; a flagged update gets weight 0 and no payout.",
    ["round", "vehicle", "outcome", "θ (weight)", ["Λ (reliability)", "num wide"], "ε"], trainerRows));
  const maxEps = Math.max(1e-9, ...Object.values(v.epsilon));
  const epsRows = Object.entries(v.epsilon).sort((a, b) => b[1] - a[1]).map(([a, e]) =>
    `<tr><td class="mono" title="${esc(a)}">${esc(short(a))}</td><td class="num">${fix(e, 2)}</td><td aria-hidden="true"><span class="bar" style="width:${Math.round((120 * e) / maxEps)}px"></span></td></tr>`);
  const privacy = section("eps-h", "Privacy spent (ε per vehicle)", table(`ε at the task's δ, as each vehicle reported it; each vehicle enforces its own budget (not reported to the cloud).`,
    ["vehicle", "ε", "relative"], epsRows));
  const l = v.ledger;
  const payeeRows = l ? l.payees.map((p) => `<tr data-payee="${esc(p.payee)}"><td class="mono" title="${esc(p.payee)}">${esc(short(p.payee))}</td><td>${esc(p.role)}</td>
    <td class="num" data-field="credited">${eth(p.credited_wei)}</td><td class="num">${eth(p.claimed_wei)}</td><td class="num">${eth(p.outstanding_wei)}</td></tr>`) : [];
  const money = section("money-h", "Payouts and claims (from the chain)", (l ? cards([
    ["escrow", eth(l.escrow_wei)], ["block rewards", eth(l.block_rewards_wei)], ["payouts", eth(l.payouts_wei)],
    ["returned", eth(l.returned_wei)], ["escrow left", eth(l.escrow_left_wei)], ["claimed", eth(l.claimed_wei)],
    ["outstanding", eth(l.outstanding_wei)], ["gas spent", eth(l.gas_wei), "gas"], ["transactions", String(l.transactions)],
  ]) : "") + table("Each payee's credit from this task; claims are pulled with bmfl claim.", ["payee", "role", "credited (ETH)", "claimed (ETH)", "outstanding (ETH)"], payeeRows, 'id="payees"'));
  const a = await getJSON(`/tasks/${taskId}/audit`);
  const verdict = `<p id="audit-verdict" class="${a.passed ? "ok" : "bad"}">${a.passed ? "passed" : "failed"}</p>
    <p>At block ${a.block}: ${a.comparisons} numbers re-derived from the chain's events (payouts, block rewards, scores, leaders) and ${a.blobs} recorded model blobs fetched and hashed; ${a.rounds} finalized rounds.</p>
    ${a.problems.length ? `<ul>${a.problems.map((p) => `<li>${esc(p)}</li>`).join("")}</ul>` : ""}`;
  const audit = section("audit-h", "Audit", `${verdict}<p>This cloud does not re-execute the rounds; for an independent verdict that does, run on your own machine:</p>
    <pre><code>bmfl audit --task ${v.task_id} --reexecute --gateway ${esc(location.origin)} --rpc &lt;chain RPC&gt; --deployment &lt;deployment.json&gt;</code></pre>`);
  return { html: head + chart + rounds + trainers + privacy + money + audit, after: () => drawChart(v) };
}

// --- Stack -------------------------------------------------------------------------------
async function stackPage() {
  const s = await getJSON("/stack");
  const rows = s.edges.map((e) => `<tr data-edge="${e.index}"><td class="num">${e.index}</td><td class="mono">${esc(short(e.address))}</td>
    <td class="wide mono">${esc(e.url)}</td><td class="${e.healthy ? "ok" : "bad"}">${e.healthy ? "healthy" : `down: ${esc(e.detail)}`}</td>
    <td class="num">${e.block ?? "—"}</td><td>${Object.entries(e.last_round).map(([t, r]) => `task ${esc(t)}: ${r}`).join(", ") || "—"}</td>
    <td>${Object.entries(e.associations).map(([k, n]) => `${esc(k)} ${n}`).join(", ") || "—"}</td><td class="num">${e.uploads_accepted}</td>
    <td>${Object.entries(e.refusals).map(([k, n]) => `${esc(k)} ${n}`).join(", ") || "none"}</td></tr>`);
  const b = s.blob_store;
  return `<h1>Stack</h1>` + cards([
    ["chain head", String(s.block), "block"], ["chain id", String(s.chain_id)], ["gas spent (ETH)", eth(s.gas_wei), "gas-total"],
    ["tasks", String(s.tasks)], ["healthy edges", `${s.edges.filter((e) => e.healthy).length} / ${s.edges.length}`, "healthy-edges"],
    ["cloud", `<span class="mono">${esc(short(s.cloud))}</span>`],
  ]) + section("edges-h", "Edges", table("Read by the cloud from each edge's /healthz and /metrics.",
    ["#", "address", ["url", "wide"], "health", "block", "last round", "associations", "accepted uploads", "refused uploads by reason"], rows, 'id="edges"'))
    + section("blobs-h", "Blob store", cards([["kind", esc(b.kind)], ["location", `<span class="mono">${esc(b.location)}</span>`],
      ["blobs", b.blobs ?? "—"], ["bytes", b.bytes === null ? "—" : b.bytes.toLocaleString("en")]]));
}

// --- router and polling ------------------------------------------------------------------
function route() {
  const path = location.pathname.replace(/\/+$/, "");
  const task = path.match(/^\/ui\/tasks\/(\d+)$/);
  if (task) return { nav: "tasks", load: () => taskPage(Number(task[1])) };
  if (path === "/ui/stack") return { nav: "stack", load: stackPage };
  return { nav: "tasks", load: tasksPage };
}

let shown = "";
async function refresh() {
  const { nav, load } = route();
  document.querySelectorAll("[data-nav]").forEach((a) => (a.dataset.nav === nav ? a.setAttribute("aria-current", "page") : a.removeAttribute("aria-current")));
  const status = document.getElementById("updated");
  try {
    notes = 0;
    const page = await load();
    const { html, after } = typeof page === "string" ? { html: page, after: null } : page;
    if (html !== shown) { // replace only what changed, so focus and scroll survive a poll
      document.getElementById("main").innerHTML = html;
      shown = html;
    }
    if (after) after();
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (err) {
    status.textContent = `refresh failed: ${err.message}`;
  }
}

async function poll() { // the next poll starts once this one is done: a slow edge never piles requests up
  await refresh();
  setTimeout(poll, POLL_MS);
}

poll();
