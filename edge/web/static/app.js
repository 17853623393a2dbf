// duet-edge status pages (no external code).
// Host page: rendered by the gateway; this script only swaps in the fresh part every few seconds.
// Technician page: polls the JSON API and renders it.
"use strict";
(function () {
  // ---------------------------------------------------------------- host page
  function hostPage() {
    const body = document.body;
    const lang = body.dataset.lang;
    const every = Math.max(1000, Number(body.dataset.refreshMs) || 5000);
    const main = document.getElementById("home-main");
    let busy = false;
    async function refresh() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const r = await fetch("/home/main?lang=" + encodeURIComponent(lang), { cache: "no-store" });
        if (r.ok) main.innerHTML = await r.text(); // server-rendered and escaped (Jinja2 autoescape)
      } catch (err) {
        // the gateway restarts or the Wi-Fi drops: keep what is shown, try again
      } finally {
        busy = false;
      }
    }
    setInterval(refresh, every);
    document.addEventListener("visibilitychange", refresh);
  }

  // ---------------------------------------------------------------- technician page
  function techPage() {
    const T = JSON.parse(document.getElementById("i18n").textContent);
    const CFG = JSON.parse(document.getElementById("cfg").textContent);

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
      return new Date(ms).toLocaleString(CFG.lang, { dateStyle: "medium", timeStyle: "medium" });
    }
    async function getJSON(path) {
      const r = await fetch(path, { cache: "no-store" });
      return { ok: r.ok, status: r.status, body: await r.json() };
    }
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
    // A table whose cells carry their column name, so that on a phone each row becomes a card.
    function table(headers, rows) {
      return el("table", { class: "rows" },
        el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c, i) => el("td", { "data-label": headers[i] }, c))))));
    }
    function kv(pairs) {
      return el("table", { class: "kv" }, el("tbody", {}, ...pairs.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))));
    }
    function render(status, health) {
      const now = status.now_ms;
      const ago = (ms) => (ms ? t("ago", { age: duration((now - ms) / 1000) }) : t("never"));
      const src = status.sources.map((s) => {
        const bad = Object.entries(s.frames_bad).map(([k, n]) => k + ": " + n).join(", ") || "0";
        const why = s.state !== "connected" && s.last_error ? " (" + s.last_error + ")" : "";
        const state = el("span", { class: s.problem ? "problem" : "" }, s.state + why);
        const device = Object.entries(s.device).map(([k, v]) => k + "=" + v).join(", ");
        return [s.label ? s.name + " · " + s.label : s.name, state, s.frames_ok, bad, ago(s.last_frame_ms), s.reconnects, device];
      });
      const b = status.buffer, c = status.counters;
      const up = status.uplinks.map((u) => [u.name, u.state + (u.last_error ? " (" + u.last_error + ")" : ""),
        ago(u.last_confirmed_ms), u.confirmed, u.rejected, u.reconnects]);
      const certs = status.certificates.map((x) => [x.setting, x.subject_cn || x.error || "",
        x.not_after ? x.not_after.slice(0, 10) + " (" + x.days_left + " d)" : ""]);
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
            [t("ingest_rate"), b.ingest_per_s], [t("evicted"), c.evicted], [t("refused"), c.refused], [t("dead_lettered"), c.dead_lettered]]),
        el("h2", {}, t("uplink")),
        table([t("uplink"), t("state"), t("last_confirmed"), t("confirmed"), t("rejected"), t("reconnects")], up),
        el("h2", {}, t("clock")), kv([[t("clock"), t("clock_" + status.clock.sync) + " · " + clock(status.clock.now_ms)]]),
        el("h2", {}, t("certificates")), certs.length ? table(["", "CN", t("expires")], certs) : el("p", {}, "–"),
        el("h2", {}, t("versions")), kv([...runtime, ...sensors, ...artefacts]));
      const buttons = document.getElementById("restart-buttons");
      if (buttons && !buttons.childElementCount) {
        for (const s of status.sources) {
          const btn = el("button", { type: "button", "data-source": s.name }, t("restart") + " " + s.name);
          btn.addEventListener("click", () => act("/api/actions/restart/" + encodeURIComponent(s.name)));
          buttons.append(btn);
        }
      }
    }
    async function act(path) {
      const token = document.getElementById("token").value;
      const r = await fetch(path, { method: "POST", headers: { Authorization: "Bearer " + token } });
      document.getElementById("action-result").textContent = r.status + " " + (await r.text());
    }
    async function tick() {
      try {
        const status = (await getJSON("/api/status")).body;
        showStatus(status);
        render(status, (await getJSON("/healthz")).body);
      } catch (err) {
        document.getElementById("status-line").className = "status warn";
      }
    }
    document.getElementById("home-link").textContent = t("home_link");
    if (CFG.actions) {
      document.getElementById("actions-title").textContent = t("actions");
      document.getElementById("token-label").textContent = t("token");
      const up = document.getElementById("upload-now");
      up.textContent = t("upload_now");
      up.addEventListener("click", () => act("/api/actions/upload"));
    } else {
      document.getElementById("actions-off").textContent = t("actions_off");
    }
    tick();
    setInterval(tick, Math.max(250, CFG.refresh_s * 1000));
  }

  if (document.body.dataset.page === "home") hostPage();
  else techPage();
})();
