// kasp dashboard: what htmx does not do by itself. The page's one EventSource is
// htmx's SSE extension on <body> (GET /events/stream, the stream every client
// uses); #kasp-events hears every event type and this script
//   - keeps the overview's counters from the events themselves (each carries its
//     from/to states), after the snapshot the page was rendered with, and
//     re-reads /stats every data-resync-ms for what no event says (delayed jobs
//     coming due, other instances' workers, evictions);
//   - refreshes the fragments an event concerns ([data-refresh]: "job:<id>",
//     "states:a,b", "jobs:<state>:<open>:<ids>"), at most once per REFRESH_MS,
//     always after the last event of a burst (so nothing stays stale);
//   - keeps the live feed and the throughput chart;
//   - shows times in the browser's zone (UTC on hover) and retry countdowns;
//   - sends the actions (Retry, Cancel, Enqueue) to the API, with the session cookie.
"use strict";
(function () {
  const REFRESH_MS = 500; // a guess: live to the eye, a few requests a second at most
  const FEED_MAX = 50; // events kept in the feed
  const CHART_SECONDS = 300; // "the last minutes"
  const FINISHING = new Set(["succeeded", "failed", "cancelled"]);
  const ATTEMPT_END = new Set(["succeeded", "retry_scheduled", "failed"]);
  const ATTEMPT_FAILED = new Set(["retry_scheduled", "failed"]);

  // -- fragments -----------------------------------------------------------
  const pending = new Map();
  function concerns(spec, ev) {
    if (spec.startsWith("job:")) return spec.slice(4) === ev.job_id;
    if (spec.startsWith("states:")) {
      const states = spec.slice(7).split(",");
      return states.includes(ev.to) || states.includes(ev.from);
    }
    if (spec.startsWith("jobs:")) {
      // a page of the jobs table: its rows' jobs, jobs entering or leaving its state
      // filter, and (on the last page of all jobs) new jobs
      const rest = spec.slice(5);
      const a = rest.indexOf(":"), b = rest.indexOf(":", a + 1);
      const state = rest.slice(0, a), open = rest.slice(a + 1, b) === "open";
      if (rest.slice(b + 1).split(" ").includes(ev.job_id)) return true;
      if (state) return ev.to === state || ev.from === state;
      return open && ev.type === "enqueued";
    }
    return false;
  }

  // -- counters --------------------------------------------------------------
  // The overview's numbers, as /stats has them: jobs by state, queue depth (ready),
  // delayed, busy workers. Events move them (from/to); /stats corrects what events
  // cannot say. Events already counted in a /stats snapshot (seq <= synced) are skipped.
  let counters = null;
  function readCounters(box) {
    const num = function (sel) { return Number(box.querySelector(sel).textContent); };
    const jobs = {};
    box.querySelectorAll("[data-count]").forEach(function (el) { jobs[el.dataset.count] = Number(el.textContent); });
    return {
      box: box, jobs: jobs, synced: Number(box.dataset.seq), applied: Number(box.dataset.seq),
      depth: num("[data-gauge=depth]"), capacity: num("[data-gauge=capacity]"),
      delayed: num("[data-gauge=delayed]"), busy: num("[data-gauge=busy]"),
      workers: num("[data-gauge=workers]"), due: new Map(), dirty: false,
    };
  }
  function dueOf(ev) {
    const at = ev.data ? (ev.data.next_attempt_at || ev.data.run_at) : null;
    const due = at ? Date.parse(at) : NaN;
    return due > Date.parse(ev.at) ? due : null;
  }
  function countEvent(ev) {
    const c = counters;
    if (!c || ev.seq <= c.synced) return;
    c.applied = Math.max(c.applied, ev.seq);
    if (ev.from) c.jobs[ev.from] -= 1;
    c.jobs[ev.to] += 1;
    if (ev.from === "queued") {
      if (c.due.delete(ev.job_id)) c.delayed -= 1;
      else c.depth -= 1;
    }
    if (ev.to === "queued") {
      const due = dueOf(ev);
      if (due === null) c.depth += 1;
      else { c.due.set(ev.job_id, due); c.delayed += 1; }
    }
    if (ev.to === "running") c.busy += 1;
    if (ev.from === "running") c.busy -= 1;
    c.dirty = true;
  }
  function comeDue() {
    const c = counters, now = Date.now();
    for (const [job, due] of c.due) {
      if (due <= now) { c.due.delete(job); c.delayed -= 1; c.depth += 1; c.dirty = true; }
    }
  }
  function showCounters() {
    const c = counters;
    if (!c.dirty) return;
    c.dirty = false;
    const clamp = function (v, hi) { return Math.max(0, hi === undefined ? v : Math.min(v, hi)); };
    c.box.querySelectorAll("[data-count]").forEach(function (el) { el.textContent = clamp(c.jobs[el.dataset.count]); });
    const gauges = { depth: clamp(c.depth), delayed: clamp(c.delayed), busy: clamp(c.busy, c.workers),
      capacity: c.capacity, workers: c.workers };
    for (const name in gauges) {
      const el = c.box.querySelector("[data-gauge=" + name + "]");
      if (el) el.textContent = gauges[name];
    }
    c.box.querySelector("[data-meter=depth]").value = gauges.depth;
    c.box.querySelector("[data-meter=busy]").value = gauges.busy;
  }
  async function resync() {
    const c = counters;
    let s;
    try {
      const response = await fetch("/stats", { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return; // the next resync tries again; the stream's own state shows in #live
      s = await response.json();
    } catch (e) { return; }
    if (s.events.last_seq < c.applied) return; // the stream is ahead of this snapshot: wait for the next
    Object.assign(c.jobs, s.jobs);
    c.depth = s.queue.depth; c.capacity = s.queue.capacity; c.delayed = s.queue.delayed;
    c.busy = s.workers.busy; c.workers = s.workers.size;
    c.synced = c.applied = s.events.last_seq;
    const now = Date.now();
    for (const [job, due] of c.due) if (due <= now) c.due.delete(job);
    const accepting = c.box.querySelector("[data-gauge=accepting]");
    if (accepting) accepting.textContent = s.accepting ? "yes" : "no (draining)";
    c.dirty = true;
    showCounters();
  }
  function startCounters() {
    const box = document.querySelector("[data-counters]");
    if (!box) return;
    counters = readCounters(box);
    setInterval(function () { comeDue(); showCounters(); }, 250);
    setInterval(resync, Number(box.dataset.resyncMs));
  }
  function scheduleRefresh(id) {
    if (pending.has(id)) return;
    pending.set(id, setTimeout(function () {
      pending.delete(id);
      const el = document.getElementById(id);
      if (el) htmx.trigger(el, "kasp:refresh");
    }, REFRESH_MS));
  }

  // -- feed ----------------------------------------------------------------
  function feedItem(ev) {
    const feed = document.getElementById("feed");
    if (!feed) return;
    const empty = document.getElementById("feed-empty");
    if (empty) empty.hidden = true;
    const li = document.createElement("li");
    li.className = "type-" + ev.type;
    const link = document.createElement("a");
    link.href = "/ui/jobs/" + encodeURIComponent(ev.job_id).replace(/%3A/g, ":").replace(/%40/g, "@");
    link.textContent = ev.job_id;
    const what = document.createElement("strong");
    what.textContent = ev.type + (ev.attempt ? " #" + ev.attempt : "");
    li.append(timeElement(ev.at), " ", what, " ", link);
    if (ev.data && ev.data.error) {
      const err = document.createElement("span");
      err.className = "error";
      err.textContent = " " + ev.data.error;
      li.append(err);
    }
    feed.prepend(li);
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  }

  // -- chart ---------------------------------------------------------------
  const buckets = new Map(); // second -> [finished, attemptsEnded, attemptsFailed]
  let chart = null;
  function count(ev) {
    const second = Math.floor(Date.parse(ev.at) / 1000);
    let b = buckets.get(second);
    if (!b) buckets.set(second, (b = [0, 0, 0]));
    if (FINISHING.has(ev.type)) b[0] += 1;
    if (ATTEMPT_END.has(ev.type)) b[1] += 1;
    if (ATTEMPT_FAILED.has(ev.type)) b[2] += 1;
  }
  function chartData() {
    const now = Math.floor(Date.now() / 1000);
    const xs = [], finished = [], share = [];
    for (let s = now - CHART_SECONDS + 1; s <= now; s++) {
      const b = buckets.get(s);
      xs.push(s);
      finished.push(b ? b[0] : 0);
      share.push(b && b[1] ? Math.round((100 * b[2]) / b[1]) : null);
    }
    for (const s of buckets.keys()) if (s < now - CHART_SECONDS) buckets.delete(s);
    return [xs, finished, share];
  }
  function startChart() {
    const box = document.getElementById("chart");
    if (!box || typeof uPlot === "undefined") return;
    const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
    const ink = dark ? "#ddd" : "#222";
    const axis = { stroke: ink, grid: { stroke: dark ? "#333" : "#eee" } };
    chart = new uPlot({
      width: Math.max(280, box.clientWidth),
      height: 200,
      series: [
        {},
        { label: "finished jobs/s", stroke: "#2a7ae2", width: 2, fill: "rgba(42,122,226,0.15)" },
        { label: "failed attempts %", stroke: "#d9534f", width: 2, scale: "%", spanGaps: false },
      ],
      axes: [axis, { ...axis, label: "jobs/s" }, { ...axis, scale: "%", side: 1, label: "%", grid: { show: false } }],
      scales: { "%": { range: [0, 100] } },
    }, chartData(), box);
    setInterval(function () { chart.setData(chartData()); }, 1000);
    window.addEventListener("resize", function () { chart.setSize({ width: Math.max(280, box.clientWidth), height: 200 }); });
  }

  // -- times ---------------------------------------------------------------
  const localFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3,
  });
  function timeElement(iso) {
    const t = document.createElement("time");
    t.dateTime = iso;
    localize(t);
    return t;
  }
  function localize(t) {
    const ms = Date.parse(t.dateTime);
    if (Number.isNaN(ms)) return;
    t.textContent = localFormat.format(new Date(ms));
    t.title = t.dateTime + " (UTC)";
  }
  function tickCountdowns() {
    const now = Date.now();
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      const left = Date.parse(el.dataset.countdown) - now;
      el.textContent = left > 0 ? "(in " + (left / 1000).toFixed(1) + " s)" : "(due now)";
    });
  }

  // -- actions -------------------------------------------------------------
  function flash(text, ok, href) {
    const box = document.getElementById("flash");
    box.className = ok ? "ok" : "refused";
    box.textContent = text;
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = " open the job";
      box.append(a);
    }
  }
  async function act(url, body) {
    const init = { method: "POST", credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    let doc = null;
    try { doc = await response.json(); } catch (e) { doc = null; }
    return { ok: response.ok, status: response.status, doc: doc };
  }
  function refusal(r) {
    return "refused (" + r.status + "): " + (r.doc && r.doc.message ? r.doc.message : "no details");
  }
  // A job's buttons: data-action names the API command, what a success says, what a refusal names.
  const ACTIONS = {
    retry: { done: "is queued again", verb: "retry" },
    cancel: { done: "is cancelled", verb: "cancel" },
  };
  document.addEventListener("click", async function (e) {
    const button = e.target.closest("button[data-action][data-job]");
    if (!button || !ACTIONS[button.dataset.action]) return;
    const action = ACTIONS[button.dataset.action];
    const id = button.dataset.job;
    button.disabled = true;
    const r = await act("/jobs/" + encodeURIComponent(id) + "/" + button.dataset.action);
    button.disabled = false;
    if (!r.ok) flash(action.verb + " of " + id + " " + refusal(r), false);
    else if (r.doc && r.doc.status === "cancelling") flash("job " + id + " is being cancelled (its attempt is cut)", true);
    else flash("job " + id + " " + action.done, true);
  });
  document.addEventListener("submit", async function (e) {
    const form = e.target;
    if (form.getAttribute("id") !== "enqueue-form") return; // (form.id is its "id" input)
    e.preventDefault();
    const data = new FormData(form);
    const body = { id: data.get("id"), payload: data.get("payload") || "" };
    const retries = String(data.get("max_retries") || "").trim();
    body.max_retries = retries === "" ? 0 : Number(retries);
    const r = await act("/enqueue", body);
    if (r.ok) {
      flash("job " + body.id + " accepted (" + r.doc.status + ")", true, "/ui/jobs/" + encodeURIComponent(body.id));
      form.elements.id.value = "";
    } else flash("enqueue " + refusal(r), false);
  });

  // -- wiring --------------------------------------------------------------
  function onEvent(e) {
    const message = e.detail;
    if (!message || !message.data) return;
    let ev;
    try { ev = JSON.parse(message.data); } catch (err) { return; }
    feedItem(ev);
    count(ev);
    countEvent(ev);
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      if (el.id && concerns(el.dataset.refresh, ev)) scheduleRefresh(el.id);
    });
  }
  function liveState(text, state) {
    const live = document.getElementById("live");
    if (live) { live.textContent = text; live.dataset.state = state; }
  }
  document.addEventListener("DOMContentLoaded", function () {
    const hub = document.getElementById("kasp-events");
    if (hub) hub.addEventListener("htmx:sseMessage", onEvent);
    document.body.addEventListener("htmx:sseOpen", function () { liveState("live", "open"); });
    document.body.addEventListener("htmx:sseError", function () { liveState("reconnecting…", "error"); });
    htmx.onLoad(function (root) { root.querySelectorAll("time[datetime]").forEach(localize); tickCountdowns(); });
    setInterval(tickCountdowns, 250);
    startChart();
    startCounters();
  });
})();
