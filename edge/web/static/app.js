// duet-edge status pages: polls the gateway's JSON API and renders it (no external code).
"use strict";
(function () {
  const T = JSON.parse(document.getElementById("i18n").textContent);
  const CFG = JSON.parse(document.getElementById("cfg").textContent);
  const HIDDEN = /^(nc|ncm)|_cf1$/; // particle counts and CF=1 values: technician data
  const ORDER = ["pm2_5", "pm10", "pm1", "no2", "o3", "co2", "temperature", "humidity", "pressure"];
  let history = {};
  let token = "";

  function t(key, vars) {
    let s = T[key] || key;
    for (const [k, v] of Object.entries(vars || {})) s = s.replace("{" + k + "}", v);
    return s;
  }
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "?";
    const s = Math.max(0, Math.round(seconds));
    if (s < 90) return s + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1).replace(/\.0$/, "") + " h";
    return Math.round(s / 86400) + " d";
  }
  function clock(ms) {
    if (!ms) return t("never");
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString(CFG.lang) : d.toLocaleString(CFG.lang);
  }
  function number(v) {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);
    return v.toLocaleString(CFG.lang, { maximumFractionDigits: a >= 100 ? 0 : a >= 10 ? 1 : 2 });
  }
  async function getJSON(path) {
    const r = await fetch(path, { cache: "no-store" });
    return { ok: r.ok, status: r.status, body: await r.json() };
  }

  // ---------------------------------------------------------------- status line
  function statusText(overall) {
    const parts = [];
    for (const code of overall.codes) {
      if (code === "sensor_problem") parts.push(t("status_sensor_problem", { sensors: overall.sensors.join(", ") }));
      else if (code === "not_uploading") parts.push(t("status_not_uploading", { since: clock(overall.not_uploading_since_ms) }));
      else parts.push(t("status_" + code));
    }
    return parts.join(" ");
  }
  function showStatus(status) {
    const line = document.getElementById("status-line");
    line.textContent = statusText(status.overall);
    line.className = "status " + status.overall.level;
    line.dataset.codes = status.overall.codes.join(" ");
  }

  // ---------------------------------------------------------------- home page
  function flagText(v) {
    if (!v.quality) return { text: t("flag_not_evaluated"), ok: true };
    if (!v.flags.length) return { text: t("flag_" + (v.quality === "pass" ? "ok" : v.quality)), ok: true };
    const text = v.flags.map((f) => {
      const what = t("flag_" + f.flag) + ": " + t("test_" + f.test);
      return f.for_s ? what + " " + t("for_duration", { duration: duration(f.for_s) }) : what;
    }).join("; ");
    return { text, ok: false };
  }
  function sparkPoints(key, v) {
    const pts = (history[key] || []).map((p) => [p[0], p[1]]);
    pts.push([v.time_ms, v.value]);
    if (pts.length === 1) pts.unshift([v.time_ms - 60000, v.value]);
    const t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]));
    let lo = Math.min(...pts.map((p) => p[1])), hi = Math.max(...pts.map((p) => p[1]));
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    return pts.map((p) => {
      const x = t1 > t0 ? ((p[0] - t0) / (t1 - t0)) * 100 : 100;
      const y = 28 - ((p[1] - lo) / (hi - lo)) * 26;
      return x.toFixed(2) + "," + y.toFixed(2);
    }).join(" ");
  }
  function valueRow(sensor, v) {
    const key = sensor + "/" + v.quantity;
    const svgNS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 100 30");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", v.label + ", " + t("last_24h"));
    const line = document.createElementNS(svgNS, "polyline");
    line.setAttribute("points", sparkPoints(key, v));
    svg.append(line);
    const flags = flagText(v);
    const top = el("div", {}, el("span", { class: "num" }, number(v.value)), el("span", { class: "unit" }, v.unit_symbol));
    if (v.band) top.append(el("span", { class: "band " + v.band }, t("band_" + v.band)));
    return el("div", { class: "value", "data-key": key },
      el("div", { class: "label" }, v.label),
      top,
      el("div", { class: "flags" + (flags.ok ? " ok" : "") }, flags.text),
      svg,
      el("div", { class: "meta" }, t("updated", { age: duration(v.age_s) }) + " · " + t("last_24h")));
  }
  function renderHome(latest) {
    const main = document.getElementById("sensors");
    const cards = latest.sensors.map((s) => {
      const rank = (q) => { const i = ORDER.indexOf(q); return i < 0 ? ORDER.length : i; };
      const shown = s.values.filter((v) => !HIDDEN.test(v.quantity));
      shown.sort((a, b) => rank(a.quantity) - rank(b.quantity) || a.quantity.localeCompare(b.quantity));
      const rows = shown.map((v) => valueRow(s.name, v));
      return el("section", { class: "sensor", "data-sensor": s.name }, el("h2", {}, s.name), ...rows);
    });
    if (!cards.length) cards.push(el("p", {}, t("no_data")));
    main.replaceChildren(...cards);
  }
  async function loadHistory() {
    const h = (await getJSON("/api/history")).body;
    const next = {};
    for (const s of h.streams) next[s.sensor + "/" + s.quantity] = s.points;
    history = next;
  }

  // ---------------------------------------------------------------- technician page
  function table(headers, rows) {
    return el("table", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h))),
      ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c)))));
  }
  function kv(pairs) { return table(["", ""], pairs); }
  function renderTech(status, health) {
    const now = status.now_ms;
    const ago = (ms) => (ms ? t("ago", { age: duration((now - ms) / 1000) }) : t("never"));
    const src = status.sources.map((s) => {
      const bad = Object.entries(s.frames_bad).map(([k, n]) => k + ": " + n).join(", ") || "0";
      const why = s.state !== "connected" && s.last_error ? " (" + s.last_error + ")" : "";
      const state = el("span", { class: s.problem ? "problem" : "" }, s.state + why);
      const device = Object.entries(s.device).map(([k, v]) => k + "=" + v).join(", ");
      return [s.name, state, s.frames_ok, bad, ago(s.last_frame_ms), s.reconnects, device];
    });
    const b = status.buffer, c = status.counters;
    const up = status.uplinks.map((u) => [u.name, u.state + (u.last_error ? " (" + u.last_error + ")" : ""),
      ago(u.last_confirmed_ms), u.confirmed, u.rejected, u.reconnects]);
    const certs = status.certificates.map((x) => [x.setting, x.subject_cn || x.error || "", x.not_after ? t("expires") + " " + x.not_after.slice(0, 10) + " (" + x.days_left + " d)" : ""]);
    const sensors = Object.entries(status.versions.sensors).map(([k, v]) => [k, Object.entries(v).map(([a, b2]) => a + "=" + b2).join(", ")]);
    const runtime = Object.entries(status.versions.runtime);
    const artefacts = status.versions.artefacts.map((a) => [a.setting, a.files]);
    document.getElementById("tech").replaceChildren(
      el("h2", {}, t("health")), kv([["/healthz", health.ok ? "ok" : health.problems.join("; ")]]),
      el("h2", {}, t("sensor")),
      table([t("sensor"), t("state"), t("frames_ok"), t("frames_bad"), t("last_frame"), t("reconnects"), t("device")], src),
      el("h2", {}, t("buffer")),
      kv([[t("buffer_depth"), b.depth], [t("oldest_unsent"), b.oldest_unsent_age_s === null ? "–" : duration(b.oldest_unsent_age_s)],
          [t("buffer_size"), (b.size_bytes / 1048576).toFixed(2) + " / " + (b.max_bytes / 1048576).toFixed(0) + " MiB"],
          ["ingest/s", b.ingest_per_s], [t("evicted"), c.evicted], [t("refused"), c.refused], [t("dead_lettered"), c.dead_lettered]]),
      el("h2", {}, t("uplink")),
      table([t("uplink"), t("state"), t("last_confirmed"), "confirmed", "rejected", t("reconnects")], up),
      el("h2", {}, t("clock")), kv([[t("clock"), t("clock_" + status.clock.sync)]]),
      el("h2", {}, t("certificates")), certs.length ? table(["", "CN", t("expires")], certs) : el("p", {}, "–"),
      el("h2", {}, t("versions")), kv([...runtime, ...sensors, ...artefacts]));
    const buttons = document.getElementById("restart-buttons");
    if (!buttons.childElementCount) {
      for (const s of status.sources) {
        const btn = el("button", { type: "button", "data-source": s.name }, t("restart") + " " + s.name);
        btn.addEventListener("click", () => act("/api/actions/restart/" + encodeURIComponent(s.name)));
        buttons.append(btn);
      }
    }
  }
  async function act(path) {
    token = document.getElementById("token").value;
    const r = await fetch(path, { method: "POST", headers: { Authorization: "Bearer " + token } });
    document.getElementById("action-result").textContent = r.status + " " + (await r.text());
  }

  // ---------------------------------------------------------------- loop
  async function tick() {
    try {
      const status = (await getJSON("/api/status")).body;
      showStatus(status);
      if (document.body.dataset.page === "home") renderHome((await getJSON("/api/latest")).body);
      else renderTech(status, (await getJSON("/healthz")).body);
    } catch (err) {
      document.getElementById("status-line").className = "status warn";
    }
  }
  async function main() {
    const home = document.getElementById("tech-link");
    if (home) home.textContent = t("tech_link");
    const back = document.getElementById("home-link");
    if (back) back.textContent = t("home_link");
    const note = document.getElementById("band-note");
    if (note) note.textContent = t("band_note");
    if (document.body.dataset.page === "home") {
      await loadHistory().catch(() => {});
      setInterval(() => loadHistory().catch(() => {}), 30000);
    } else {
      document.getElementById("actions-title").textContent = t("actions");
      document.getElementById("token-label").textContent = t("token");
      const up = document.getElementById("upload-now");
      up.textContent = t("upload_now");
      up.addEventListener("click", () => act("/api/actions/upload"));
    }
    await tick();
    setInterval(tick, Math.max(250, CFG.refresh_s * 1000));
  }
  main();
})();
