// The wsgate dashboard: reads /events (Server-Sent Events, one JSON
// document a second) and draws it. Built with the DOM only, so names from
// the configuration are never parsed as HTML.
"use strict";

const CLOSE_NAMES = {
  1000: "normal", 1001: "going away", 1002: "protocol error", 1003: "unsupported data",
  1005: "no status", 1006: "abnormal", 1007: "invalid payload", 1008: "policy violation",
  1009: "message too big", 1010: "extension missing", 1011: "internal error",
  1012: "service restart", 1013: "try again later", 1014: "bad gateway",
  "3xxx": "registered (3000-3999)", "4xxx": "application (4000-4999)",
};
// Codes an operator should notice at once: limits hit, broken peers, broken backends.
const ALERT_CODES = new Set([1009, 1002, 1014]);

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function rate(n) {
  if (n === null || n === undefined) return "–";
  if (n >= 1000) return human(n, ["", "k", "M", "G"], 1000);
  return n >= 10 || n === 0 ? n.toFixed(0) : n.toFixed(1);
}

function bytes(n) {
  return human(n, ["B", "KiB", "MiB", "GiB", "TiB"], 1024);
}

function human(n, units, step) {
  let i = 0;
  while (n >= step && i < units.length - 1) { n /= step; i += 1; }
  return (n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)) + (units[i] ? " " + units[i] : "");
}

function age(seconds) {
  if (seconds < 60) return seconds.toFixed(0) + " s ago";
  if (seconds < 3600) return (seconds / 60).toFixed(0) + " min ago";
  return (seconds / 3600).toFixed(1) + " h ago";
}

function sparkline(svg, values) {
  const nums = values.map((v) => (typeof v === "number" ? v : 0));
  svg.replaceChildren();
  if (nums.length < 2) return;
  const max = Math.max(1, ...nums);
  const step = 300 / Math.max(1, nums.length - 1);
  const pts = nums.map((v, i) => `${(i * step).toFixed(1)},${(39 - (v / max) * 37).toFixed(1)}`);
  const ns = "http://www.w3.org/2000/svg";
  const area = document.createElementNS(ns, "polygon");
  area.setAttribute("points", `0,40 ${pts.join(" ")} ${((nums.length - 1) * step).toFixed(1)},40`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.append(area, line);
}

function fillTable(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...rows);
  const empty = $(id + "-empty");
  if (empty) empty.hidden = rows.length > 0;
}

function draw(doc) {
  $("version").textContent = doc.version;
  $("loaded").textContent = doc.loaded_at;
  const t = doc.totals;
  $("open").textContent = t.open;
  $("handshakes").textContent = rate(t.handshakes_per_s);
  $("messages").textContent = `${rate(t.messages_per_s[0])} · ${rate(t.messages_per_s[1])}`;
  $("bytes").textContent = `${bytes(t.bytes_per_s[0])} · ${bytes(t.bytes_per_s[1])}`;
  const h = doc.history;
  sparkline($("spark-open"), h.open);
  sparkline($("spark-handshakes"), h.handshakes_per_s);
  sparkline($("spark-messages"), h.messages_per_s);
  sparkline($("spark-bytes"), h.bytes_per_s);
  // HTTP proxying is optional: the card shows once the proxy counts requests.
  const hasHttp = t.http_per_s !== null && t.http_per_s !== undefined;
  $("http-card").hidden = !hasHttp;
  if (hasHttp) {
    $("http").textContent = rate(t.http_per_s);
    sparkline($("spark-http"), h.http_per_s);
  }

  const closes = [...doc.closes].sort((a, b) => b.count - a.count);
  fillTable("closes", closes.map((c) => el("tr", { class: ALERT_CODES.has(c.code) ? "alert" : "", "data-code": c.code },
    el("td", {}, c.code), el("td", {}, CLOSE_NAMES[c.code] || ""),
    el("td", {}, c.initiator), el("td", { class: "num" }, c.count))));
  fillTable("rejections", doc.rejections.map((r) => el("tr", { "data-status": r.status },
    el("td", {}, r.status), el("td", { class: "num" }, r.count), el("td", { class: "num" }, r.total))));

  const reloads = doc.reloads.map((r) => el("li", { class: r.ok ? "ok" : "fail" },
    `${r.at} — ${r.ok ? "version " + r.version : "refused"}`,
    r.errors.length ? el("div", { class: "errors" }, r.errors.join("\n")) : null));
  $("reloads").replaceChildren(...reloads);
  $("reloads-empty").hidden = reloads.length > 0;

  fillTable("listeners", doc.listeners.map((l) => el("tr", {},
    el("td", {}, l.name), el("td", {}, l.bind), el("td", {}, l.tls ? "yes" : "no"),
    el("td", { class: "num" }, l.tls_failures))));
  fillTable("routes", doc.routes.map((r) => el("tr", {},
    el("td", {}, r.route), el("td", {}, r.listener ?? "any"), el("td", {}, r.pool),
    el("td", { class: "num" }, r.active), el("td", { class: "num" }, rate(r.handshakes_per_s)))));

  $("pools").replaceChildren(...doc.pools.map(drawPool));
}

function drawPool(p) {
  const active = p.backends.reduce((n, b) => n + b.active, 0);
  const up = p.backends.filter((b) => b.up && !b.draining).length;
  const check = p.health_check ? `${p.health_check.kind} check every ${p.health_check.interval_s} s` : "no health check";
  const rows = p.backends.map((b) => {
    const state = b.draining ? "draining" : b.up ? "up" : "down";
    let health = "–";
    if (b.check) {
      health = el("span", { class: b.check.ok ? "" : "check-fail", title: b.check.error || "" },
        `${b.check.ok ? "passed" : "failed"} ${age(b.check.age_s)}`);
    }
    const bar = el("span", { class: "bar" }, el("i"));
    if (b.max_connections) bar.firstChild.style.width = Math.min(100, (100 * b.active) / b.max_connections) + "%";
    else bar.hidden = true;
    let action = null;
    if (b.in_config) {
      action = b.drained_by_admin
        ? el("button", { type: "button", class: "undrain", "data-pool": p.name, "data-addr": b.addr }, "Undrain")
        : el("button", { type: "button", class: "drain", "data-pool": p.name, "data-addr": b.addr, disabled: b.draining }, "Drain");
    }
    return el("tr", { "data-backend": b.addr },
      el("td", {}, b.addr), el("td", {}, el("span", { class: "badge " + state }, state)),
      el("td", { class: "num" }, b.weight ?? "–"),
      el("td", { class: "num" }, b.active, b.max_connections ? " / " + b.max_connections : "", bar),
      el("td", { class: "num" }, rate(b.handshakes_per_s)),
      el("td", { class: "num" }, `${rate(b.messages_per_s[0])} · ${rate(b.messages_per_s[1])}`),
      el("td", { class: "num" }, `${bytes(b.bytes_per_s[0])} · ${bytes(b.bytes_per_s[1])}`),
      el("td", {}, health), el("td", {}, action));
  });
  const http = p.http_per_s !== null && p.http_per_s !== undefined ? ` · ${rate(p.http_per_s)} HTTP req/s` : "";
  return el("div", { class: "panel pool", "data-pool": p.name },
    el("h2", {}, el("b", {}, p.name), `${p.balance} · ${check} · ${up}/${p.backends.length} up · ${active} active${http}`),
    el("table", {},
      el("thead", {}, el("tr", {}, ...["backend", "state", "weight", "active", "handshakes/s", "messages/s ↑ · ↓", "bytes/s ↑ · ↓", "health check", ""]
        .map((h, i) => el("th", { class: i >= 2 && i <= 6 ? "num" : "" }, h)))),
      el("tbody", {}, ...rows)));
}

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

function notice(text, error) {
  const n = $("notice");
  n.textContent = text;
  n.className = error ? "error" : "";
  n.hidden = false;
}

async function post(path, what) {
  try {
    const resp = await fetch(path, { method: "POST", headers: authHeaders() });
    const body = await resp.text();
    if (resp.ok) {
      notice(`${what}: done.`, false);
    } else {
      let reason = body.trim();
      try { reason = JSON.parse(body).errors.join("; "); } catch (_) { /* plain-text reason */ }
      notice(`${what}: ${resp.status} ${reason}`, true);
    }
  } catch (e) {
    notice(`${what}: ${e.message}`, true);
  }
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button.drain, button.undrain");
  if (!b) return;
  const verb = b.classList.contains("drain") ? "drain" : "undrain";
  const path = `/backends/${encodeURIComponent(b.dataset.pool)}/${encodeURIComponent(b.dataset.addr)}/${verb}`;
  b.disabled = true;
  post(path, `${verb} ${b.dataset.pool} ${b.dataset.addr}`);
});

// The stream is read with fetch rather than EventSource so that it can
// carry the bearer token when the admin listener asks for one. A new token
// ends the current stream, and the next one carries it.
let stream = null;
async function follow() {
  let delay = 1000;
  for (;;) {
    try {
      stream = new AbortController();
      const resp = await fetch("/events", { headers: authHeaders(), cache: "no-store", signal: stream.signal });
      if (!resp.ok) {
        const reason = (await resp.text()).trim();
        setLive(false, resp.status === 401 ? "401: type the admin token" : `${resp.status}: ${reason}`);
      } else {
        setLive(true, "live");
        delay = 1000;
        await readEvents(resp.body.getReader());
        setLive(false, "reconnecting");
      }
    } catch (e) {
      setLive(false, "reconnecting");
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) draw(JSON.parse(data));
    }
  }
}

function setLive(on, text) {
  const b = $("live");
  b.className = "badge " + (on ? "on" : "off");
  b.textContent = text;
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("wsgate-token") || "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("wsgate-token", $("token").value.trim());
    if (stream) stream.abort();
  });
  $("reload").addEventListener("click", () => post("/reload", "reload"));
  follow();
});
