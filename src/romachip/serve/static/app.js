// romachip's chat page: plain JavaScript over the server's own API (no build step, no library).
// Replies stream from /v1/chat/completions; the last chunk carries `chip` (the perf model's numbers for
// this very request) and `timings` (what this host took). The SRAM bar reads /v1/romachip/sram.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_NAME = "romachip.apiKey"; // sessionStorage: gone when the tab closes
const state = { history: [], contextTokens: 0, busy: false, baselines: null };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined || !isFinite(x)) return "n/a";
  return Number(x).toPrecision(digits).replace(/\.?0+$/, (m) => (m.includes(".") ? "" : m));
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

// Every call to the server: the key (if any) as a Bearer token; errors as the server's words.
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = sessionStorage.getItem(KEY_NAME);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (options.body) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new Error(`The server did not answer (${err.message}). Is romachip serve still running?`);
  }
  if (response.ok) return response;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 401) {
    $("keyform").hidden = false;
    $("apikey").focus();
    message = `${message} Enter the server's API key above.`;
  }
  const error = new Error(message);
  error.status = response.status;
  throw error;
}

async function getJson(path) {
  return (await api(path)).json();
}

// -- models and adapters ---------------------------------------------------------------------------
async function refreshModels() {
  const { data } = await getJson("/v1/models");
  const select = $("model");
  const keep = select.value;
  select.replaceChildren(...data.map((card) => {
    const option = document.createElement("option");
    option.value = card.id;
    option.textContent = card.parent ? `${card.id} (adapter, rank ${card.rank})` : `${card.id} (base)`;
    return option;
  }));
  if (data.some((c) => c.id === keep)) select.value = keep;
  const list = $("adapters");
  const adapters = data.filter((c) => c.parent);
  list.replaceChildren(...adapters.map((card) => {
    const li = document.createElement("li");
    li.dataset.adapter = card.id;
    const label = document.createElement("span");
    label.textContent = `${card.id}: rank ${card.rank}, ${card.precision}, ${bytes(card.sram_bytes)}`;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = "Unload";
    button.setAttribute("aria-label", `Unload ${card.id}`);
    button.addEventListener("click", () => adapterOp("unload", { lora_name: card.id }));
    li.append(label, button);
    return li;
  }));
  if (!adapters.length) list.innerHTML = '<li class="hint">No adapter resident: replies use the base.</li>';
  $("status").textContent = `${data[0].id}, context up to ${data[0].max_model_len} tokens`;
}

async function adapterOp(op, body) {
  showError("");
  try {
    await api(`/v1/${op}_lora_adapter`, { method: "POST", body: JSON.stringify(body) });
  } catch (err) {
    showError(`Could not ${op} the adapter: ${err.message}`);
  }
  await Promise.all([refreshModels(), refreshSram()]).catch((err) => showError(err.message));
}

const COLOURS = ["#7c4dff", "#d81b60", "#00897b", "#f4511e", "#3949ab", "#6d4c41"];

async function refreshSram() {
  const s = await getJson(`/v1/romachip/sram?context_tokens=${state.contextTokens}`);
  const parts = s.adapters.map((a, i) => ({ label: `adapter ${a.name}`, bytes: a.sram_bytes, colour: COLOURS[i % COLOURS.length], kind: "adapter" }));
  parts.push({ label: `KV cache at ${s.context_tokens} tokens (${bytes(s.kv_bytes_per_token)} per token)`, bytes: s.kv_bytes, colour: "#0a7d4f", kind: "kv" });
  parts.push({ label: "not usable by the context (word rounding, fullest H-Unit)", bytes: s.unusable_bytes, colour: "#9aa4ae", kind: "unusable" });
  parts.push({ label: `free (room for ${s.max_context_tokens - s.context_tokens} more tokens, limited by ${s.context_limit})`, bytes: s.free_bytes, colour: "#e8ecf0", kind: "free" });
  const bar = $("sram-bar");
  bar.replaceChildren(...parts.map((p) => {
    const span = document.createElement("span");
    span.style.width = `${(100 * p.bytes) / s.sram_bytes}%`;
    span.style.background = p.colour;
    span.dataset.kind = p.kind;
    if (p.bytes > 0 && p.kind !== "free") span.className = "some";
    span.dataset.bytes = p.bytes;
    span.title = `${p.label}: ${bytes(p.bytes)}`;
    return span;
  }));
  bar.setAttribute("aria-label", `SRAM ${bytes(s.sram_bytes)}: ` + parts.map((p) => `${p.label} ${bytes(p.bytes)}`).join("; "));
  $("sram-legend").replaceChildren(...parts.map((p) => {
    const li = document.createElement("li");
    li.style.setProperty("--c", p.colour);
    li.textContent = `${p.label}: ${bytes(p.bytes)}`;
    return li;
  }), Object.assign(document.createElement("li"), { textContent: `total ${bytes(s.sram_bytes)}`, className: "hint" }));
  const folders = $("load-folder");
  folders.replaceChildren(...s.adapter_folders.map((f) => Object.assign(document.createElement("option"), { value: f, textContent: f })));
  $("load-form").hidden = !s.adapter_dir;
  if (!$("load-name").value && s.adapter_folders.length) $("load-name").placeholder = s.adapter_folders[0];
}

// -- one reply ---------------------------------------------------------------------------------------
function addMessage(role, text) {
  const li = document.createElement("li");
  li.className = role;
  const span = Object.assign(document.createElement("span"), { className: "text", textContent: text });
  li.append(span);
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

// Server-sent events from a fetch body: yields each `data:` payload (the stream ends with [DONE]).
async function* sse(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) yield line.slice(6);
      }
    }
  }
}

async function send(event) {
  event.preventDefault();
  if (state.busy) return;
  const text = $("prompt").value.trim();
  if (!text) return;
  showError("");
  const body = {
    model: $("model").value,
    messages: [...state.history, { role: "user", content: text }],
    temperature: Number($("temperature").value),
    seed: Number($("seed").value),
    max_tokens: Number($("max-tokens").value),
    stream: true,
    stream_options: { include_usage: true },
  };
  setBusy(true);
  const userLi = addMessage("user", text);
  const li = addMessage("assistant", "");
  li.dataset.state = "streaming";
  let reply = "", chip = null, timings = null, usage = null;
  try {
    const response = await api("/v1/chat/completions", { method: "POST", body: JSON.stringify(body) });
    for await (const data of sse(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.choices && chunk.choices.length && chunk.choices[0].delta.content) {
        reply += chunk.choices[0].delta.content;
        li.firstChild.textContent = reply;
      }
      if (chunk.chip) { chip = chunk.chip; timings = chunk.timings; }
      if (chunk.usage) usage = chunk.usage;
    }
  } catch (err) {
    li.remove();
    userLi.remove();
    showError(err.message);
    setBusy(false);
    return;
  }
  li.dataset.state = "done";
  state.history.push({ role: "user", content: text }, { role: "assistant", content: reply });
  $("prompt").value = "";
  if (usage) state.contextTokens = usage.total_tokens;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${body.model} - host ${fmt(timings && timings.predicted_per_second)} tokens/s - chip ${fmt(chip && chip.decode_tokens_per_s)} tokens/s, ${fmt(chip && chip.energy_mj)} mJ`;
  li.append(meta);
  setBusy(false);
  if (chip) await drawChip(chip, timings).catch((err) => showError(err.message));
  await refreshSram().catch((err) => showError(err.message));
}

function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy;
  $("send").textContent = busy ? "Generating..." : "Send";
}

async function drawChip(chip, timings) {
  const numbers = [
    ["Time to first token", `${fmt(chip.ttft_ms)} ms`, "ttft"],
    ["Decode rate", `${fmt(chip.decode_tokens_per_s)} tokens/s`, "decode"],
    ["Reply time", `${fmt(chip.total_ms)} ms`, "total"],
    ["Energy", `${fmt(chip.energy_mj)} mJ (${fmt(chip.energy_per_token_mj)} mJ per decoded token)`, "energy"],
    ["Power", `${fmt(chip.power_w)} W`, "power"],
    ["Tokens", `${chip.prompt_tokens} in, ${chip.generated_tokens} out`, "tokens"],
    ["Host decode", `${fmt(timings.predicted_per_second)} tokens/s (this machine, the golden model)`, "host"],
    ["Chip", `${chip.chip}, ${chip.weight_format}${chip.adapter ? `, adapter ${chip.adapter.name} rank ${chip.adapter.rank}` : ""}`, "chipname"],
  ];
  const dl = $("chip-numbers");
  dl.replaceChildren(...numbers.flatMap(([k, v, id]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dd.dataset.field = id;
    return [dt, dd];
  }));
  dl.hidden = false;
  $("chip-empty").hidden = true;
  const context = Math.max(chip.prompt_tokens + chip.generated_tokens, 1);
  const base = await getJson(`/v1/romachip/baselines?context_tokens=${context}`);
  const rows = [
    { label: `ROMA (${chip.chip})`, rate: chip.decode_tokens_per_s, cls: "chip" },
    { label: "this host", rate: timings.predicted_per_second, cls: "host" },
    ...base.devices.map((d) => ({ label: d.device, rate: d.tokens_per_s, cls: "baseline", note: d.efficiency_source })),
  ];
  // A log scale: the chip and a CPU differ by orders of magnitude.
  const logs = rows.map((r) => Math.log10(Math.max(r.rate, 1e-3)));
  const lo = Math.min(...logs) - 0.3, hi = Math.max(...logs);
  const compare = $("compare");
  const title = Object.assign(document.createElement("h3"), { textContent: "Decode tokens/s (log scale)" });
  compare.replaceChildren(title, ...rows.map((r, i) => {
    const row = document.createElement("div");
    row.className = `bar-row ${r.cls}`;
    row.title = r.note ? `${r.label}: predicted by the roofline model (${r.note})` : r.label;
    const name = Object.assign(document.createElement("span"), { textContent: r.label });
    const track = Object.assign(document.createElement("span"), { className: "track" });
    const fill = Object.assign(document.createElement("span"), { className: "fill" });
    fill.style.display = "block";
    fill.style.width = `${(100 * (logs[i] - lo)) / Math.max(hi - lo, 1e-9)}%`;
    track.append(fill);
    const v = Object.assign(document.createElement("span"), { className: "v", textContent: fmt(r.rate) });
    row.append(name, track, v);
    return row;
  }));
}

// -- start -------------------------------------------------------------------------------------------
async function start() {
  for (let attempt = 0; attempt < 120; attempt++) { // the image may still be loading (503) for a while
    try {
      await Promise.all([refreshModels(), refreshSram()]);
      showError("");
      return;
    } catch (err) {
      if (err.status !== 503) { showError(err.message); return; }
      $("status").textContent = "the server is loading its image...";
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  showError("The server is still loading after two minutes; reload the page to try again.");
}

$("prompt-form").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("prompt-form").requestSubmit();
});
$("clear").addEventListener("click", () => {
  state.history = [];
  state.contextTokens = 0;
  $("messages").replaceChildren();
  refreshSram().catch((err) => showError(err.message));
});
$("keyform").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY_NAME, $("apikey").value);
  $("apikey").value = "";
  $("keyform").hidden = true;
  start();
});
$("load-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const folder = $("load-folder").value;
  if (!folder) { showError("The adapter folder holds no PEFT adapter to load."); return; }
  adapterOp("load", { lora_name: $("load-name").value || folder, lora_path: folder });
  $("load-name").value = "";
});
start();
