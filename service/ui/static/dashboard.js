// kasp dashboard: what htmx does not do by itself. The page's one EventSource is
// htmx's SSE extension on <body> (GET /events/stream, the stream every client
// uses); #kasp-events hears every event type and this script
//   - refreshes the fragments an event concerns ([data-refresh]: "any",
//     "job:<id>", "types:a,b"), at most once per REFRESH_MS, always after the
//     last event of a burst (so a counter never stays stale);
//   - keeps the live feed and the throughput chart;
//   - shows times in the browser's zone (UTC on hover) and retry countdowns;
//   - sends the actions (Retry, Enqueue) to the API, with the session cookie.
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
    if (spec === "any") return true;
    if (spec.startsWith("job:")) return spec.slice(4) === ev.job_id;
    if (spec.startsWith("types:")) return spec.slice(6).split(",").includes(ev.type);
    return false;
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
  document.addEventListener("click", async function (e) {
    const button = e.target.closest("button[data-retry]");
    if (!button) return;
    const id = button.dataset.retry;
    button.disabled = true;
    const r = await act("/jobs/" + encodeURIComponent(id) + "/retry");
    button.disabled = false;
    if (r.ok) flash("job " + id + " is queued again", true);
    else flash("retry of " + id + " " + refusal(r), false);
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
  });
})();
