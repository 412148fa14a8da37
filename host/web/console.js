// The Sluice console: reads the same HTTP API as any client (see /api), polls it every second,
// and draws throughput and lag from /metrics. Everything shown is text content, never HTML:
// order ids, user ids and dead-letter payloads come from clients and Kafka.
"use strict";

const POLL_MS = 1000;
const CHART_POINTS = 120;
const $ = (id) => document.getElementById(id);

// --- HTTP ------------------------------------------------------------------------------

const tokenInput = $("admin-token");
tokenInput.value = sessionStorage.getItem("sluice-admin-token") || "";
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem("sluice-admin-token", tokenInput.value.trim());
  refreshAll();
});

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body, contentType) {
  const headers = {};
  const token = tokenInput.value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = contentType || "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined || contentType ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON: /metrics */ }
  if (!response.ok) {
    throw new ApiError(response.status, (json && json.error) || `${response.status} ${response.statusText}`);
  }
  return json === null ? text : json;
}

// --- DOM -------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fillTable(table, rows, emptyText, columns) {
  const body = table.tBodies[0];
  body.replaceChildren(...(rows.length
    ? rows
    : [el("tr", {}, el("td", { class: "empty", colspan: String(columns) }, emptyText))]));
}

function say(target, text, isError) {
  const node = $(target);
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

const short = (version) => (version ? version.slice(0, 12) : "");
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");

function adminHint(error) {
  return error.status === 401 ? "admin only: enter the admin token above" : error.message;
}

// --- Health ----------------------------------------------------------------------------

async function refreshHealth() {
  const pill = $("health");
  try {
    await api("GET", "/readyz");
    pill.textContent = "ready";
    pill.className = "pill ok";
  } catch (error) {
    pill.textContent = `not ready: ${error.message}`;
    pill.className = "pill bad";
  }
}

// --- Stock and the order form ----------------------------------------------------------

async function refreshStock() {
  const products = await api("GET", "/catalogs");
  fillTable($("stock"), products.map((p) => el("tr", { "data-product": p.productId },
    el("td", { class: "mono" }, p.productId),
    el("td", {}, p.productName),
    el("td", { class: "num", "data-stock": String(p.stock) }, p.stock),
    el("td", { class: "num" }, p.unitPrice))), "no products", 4);
  const select = $("order-product");
  const chosen = select.value;
  const ids = products.map((p) => p.productId);
  if (select.options.length !== ids.length || ids.some((id, i) => select.options[i].value !== id)) {
    select.replaceChildren(...products.map((p) => el("option", { value: p.productId }, `${p.productId} — ${p.productName}`)));
    if (ids.includes(chosen)) select.value = chosen;
  }
}

$("order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const order = {
    userId: form.get("userId"),
    productId: form.get("productId"),
    quantity: Number(form.get("quantity")),
    unitPrice: Number(form.get("unitPrice")),
  };
  try {
    const placed = await api("POST", "/orders", order);
    say("order-result", `order ${placed.orderId} placed: ${placed.status}`);
    $("order-result").dataset.orderId = placed.orderId;
    refreshOrders();
  } catch (error) {
    say("order-result", error.message, true);
  }
});

// --- Orders ----------------------------------------------------------------------------

async function refreshOrders() {
  const orders = await api("GET", "/orders?limit=15");
  fillTable($("orders"), orders.map((o) => el("tr", { "data-order": o.orderId },
    el("td", {}, time(o.createdAt)),
    el("td", { class: "mono", title: o.orderId }, o.orderId.slice(0, 8)),
    el("td", {}, o.userId),
    el("td", { class: "mono" }, o.productId),
    el("td", { class: "num" }, o.quantity),
    el("td", {}, el("span", { class: `status ${o.status}`, title: o.statusReason || "" }, o.status)),
    el("td", { class: "mono" }, o.handledBy ? `${o.handledBy.plugin}@${short(o.handledBy.version)}` : ""))),
  "no orders yet", 7);
}

// --- Plugins ---------------------------------------------------------------------------

async function pluginAction(label, request) {
  try {
    const result = await request();
    say("plugin-result", `${label}: ${result.name} now runs ${short(result.version)}`
      + (result.note ? ` (${result.note})` : ""));
  } catch (error) {
    say("plugin-result", `${label} refused: ${adminHint(error)}`, true);
  }
  refreshPlugins();
}

async function refreshPlugins() {
  let plugins;
  try {
    plugins = await api("GET", "/plugins");
  } catch (error) {
    fillTable($("plugins"), [], adminHint(error), 9);
    return;
  }
  fillTable($("plugins"), plugins.map((p) => el("tr", { "data-plugin": p.name, "data-version": p.version },
    el("td", {}, p.name),
    el("td", { class: "mono", title: p.version }, short(p.version)),
    el("td", { class: "mono", title: p.previousVersion || "" }, short(p.previousVersion)),
    el("td", {}, p.topics.join(", ")),
    el("td", { class: "num" }, p.messagesHandled),
    el("td", { class: "num" }, p.errors),
    el("td", { class: "num" }, p.rejections),
    el("td", { class: "guard" }, guardText(p.guard)),
    el("td", {}, el("button", {
      class: "secondary rollback",
      "data-plugin": p.name,
      ...(p.previousVersion ? {} : { disabled: "" }),
      onclick: () => pluginAction("rollback", () => api("POST", `/plugins/${encodeURIComponent(p.name)}/rollback`)),
    }, "Roll back")))), "no plugins", 9);
}

// What the guard says of a plugin's newest version: watching it, let it stand, or rolled it
// back on its own (with why).
function guardText(guard) {
  if (!guard || !guard.enabled) return "off";
  switch (guard.state) {
    case "watching": return `watching ${short(guard.version)}`;
    case "passed": return el("span", { title: guard.reason || "" }, `passed ${short(guard.version)}`);
    case "rolled-back": return el("span", { class: "status REJECTED", "data-guard": "rolled-back" },
      `rolled back ${short(guard.version)} at ${time(guard.changedAt)}: ${guard.reason}`);
    case "failed": return el("span", { class: "status REJECTED", "data-guard": "failed" },
      `${short(guard.version)} found bad at ${time(guard.changedAt)}: ${guard.reason}`);
    default: return "on";
  }
}

$("install-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("install-file").files[0];
  const name = $("install-name").value.trim();
  if (!file) return;
  const bytes = await file.arrayBuffer();
  await pluginAction("install", () => api("PUT", `/plugins/${encodeURIComponent(name)}`, bytes, "application/wasm"));
});

// --- Dead letters ----------------------------------------------------------------------

async function showDeadLetter(id) {
  const view = $("dead-letter-view");
  try {
    const letter = await api("GET", `/dead-letters/${id}`);
    const payload = letter.payload ? (letter.payload.text ?? `base64: ${letter.payload.base64}`) : "(no payload)";
    view.textContent = `dead letter ${id} — ${letter.errorKind}: ${letter.error}\n\n${payload}`;
    view.hidden = false;
  } catch (error) {
    say("dead-letter-result", adminHint(error), true);
  }
}

async function redrive(id) {
  try {
    const result = await api("POST", `/dead-letters/${id}/redrive`);
    say("dead-letter-result", `dead letter ${id} redriven through ${result.plugin}@${short(result.pluginVersion)}: ${result.outcome}`
      + (result.reason ? ` (${result.reason})` : ""));
  } catch (error) {
    say("dead-letter-result", `redrive of ${id} refused: ${adminHint(error)}`, true);
  }
  refreshDeadLetters();
  refreshOrders();
}

async function refreshDeadLetters() {
  let page;
  try {
    page = await api("GET", "/dead-letters?limit=20");
  } catch (error) {
    fillTable($("dead-letters"), [], adminHint(error), 8);
    return;
  }
  fillTable($("dead-letters"), page.items.map((d) => el("tr", { "data-dead-letter": String(d.id), "data-state": d.resolvedAt ? "resolved" : "open" },
    el("td", {}, d.id),
    el("td", {}, time(d.createdAt)),
    el("td", { class: "mono" }, `${d.topic}/${d.partition}@${d.offset}`),
    el("td", { title: d.error }, `${d.errorKind}: ${d.error.length > 80 ? `${d.error.slice(0, 80)}…` : d.error}`),
    el("td", { class: "mono" }, `${d.plugin}@${short(d.pluginVersion)}`),
    el("td", { class: "num" }, d.redriveCount),
    el("td", {}, el("span", { class: `status ${d.resolvedAt ? "resolved" : "open"}` }, d.resolvedAt ? "resolved" : "open")),
    el("td", {},
      el("button", { class: "secondary view", onclick: () => showDeadLetter(d.id) }, "Payload"), " ",
      el("button", { class: "redrive", ...(d.resolvedAt ? { disabled: "" } : {}), onclick: () => redrive(d.id) }, "Redrive")))),
  "no dead letters", 8);
}

// --- Charts from /metrics --------------------------------------------------------------

/** Sum of the samples of `name` in a Prometheus/OpenMetrics text exposition. */
function metricSum(text, name) {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || line.startsWith("#")) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== "{" && rest[0] !== " ") continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(value)) sum += value;
  }
  return sum;
}

const series = { throughput: [], lag: [] };
let lastRecords = null;

function draw(canvas, points, color) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  g.clearRect(0, 0, width, height);
  const max = Math.max(1, Math.ceil(Math.max(...points)));
  g.strokeStyle = "#e5e7eb";
  g.fillStyle = "#6b7280";
  g.font = "11px sans-serif";
  for (const fraction of [0, 0.5, 1]) {
    const y = height - 16 - fraction * (height - 28);
    g.beginPath(); g.moveTo(36, y); g.lineTo(width, y); g.stroke();
    g.fillText(String(+(max * fraction).toFixed(1)), 2, y + 4);
  }
  g.strokeStyle = color;
  g.lineWidth = 2;
  g.beginPath();
  points.forEach((value, i) => {
    const x = 36 + (i / (CHART_POINTS - 1)) * (width - 40);
    const y = height - 16 - (value / max) * (height - 28);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
}

async function refreshCharts() {
  const text = await api("GET", "/metrics");
  const records = metricSum(text, "sluice_records_total");
  const lag = metricSum(text, "sluice_consumer_lag_records");
  const rate = lastRecords === null ? 0 : Math.max(0, (records - lastRecords) * 1000 / POLL_MS);
  lastRecords = records;
  for (const [key, value] of [["throughput", rate], ["lag", lag]]) {
    series[key].push(value);
    if (series[key].length > CHART_POINTS) series[key].shift();
  }
  $("throughput-now").textContent = rate.toFixed(0);
  $("lag-now").textContent = String(lag);
  draw($("throughput-chart"), series.throughput, "#2563eb");
  draw($("lag-chart"), series.lag, "#b45309");
}

// --- Polling ---------------------------------------------------------------------------

async function guarded(refresh) {
  try {
    await refresh();
  } catch (error) {
    const notice = $("notice");
    notice.textContent = `${refresh.name}: ${error.message}`;
    notice.hidden = false;
    return;
  }
}

function refreshAll() {
  $("notice").hidden = true;
  return Promise.all([refreshHealth, refreshStock, refreshOrders, refreshPlugins, refreshDeadLetters, refreshCharts].map(guarded));
}

refreshAll();
setInterval(refreshAll, POLL_MS);
