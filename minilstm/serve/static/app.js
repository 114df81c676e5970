// Translation as you type: one POST /translate per pause in typing (debounced), the latest answer wins.
"use strict";
const $ = (id) => document.getElementById(id);
const source = $("source"), output = $("translation"), statusLine = $("status");
const DEBOUNCE_MS = 250;
let settings = { charLimit: 1000, beamWidth: 1, keyRequired: false };
let timer = null, pending = null, sequence = 0;
const languageNames = { en: "English", fr: "French" };

async function loadSettings() {
  try {
    const response = await fetch("/frontend/settings");
    settings = await response.json();
  } catch (e) { /* keep the defaults */ }
  $("limit").textContent = settings.charLimit;
  source.maxLength = settings.charLimit;
  $("key-row").hidden = !settings.keyRequired;
  $("model").textContent = settings.model ? "Model: " + settings.model +
    (settings.beamWidth > 1 ? ", beam search width " + settings.beamWidth : ", greedy decoding") +
    (settings.attention ? ", attention" : "") : "";
}

// The attention weights as a table: a row per French character (and the end marker), a column per English one.
function showAttention(source, translation, weights) {
  const table = $("attention");
  $("attention-box").hidden = !weights || weights.length === 0;
  if ($("attention-box").hidden) return;
  const label = (c) => (c === " " ? "\u2423" : c);
  const head = document.createElement("tr");
  head.append(document.createElement("th"), ...[...source].map((c) => {
    const th = document.createElement("th");
    th.textContent = label(c);
    return th;
  }));
  const outputs = [...translation, "\u23CE"];  // the end marker closes the last row
  const rows = weights.map((row, i) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = label(outputs[i] || "");
    tr.append(th, ...row.map((w) => {
      const td = document.createElement("td");
      td.style.background = `rgba(31, 78, 160, ${w.toFixed(3)})`;
      td.title = w.toFixed(3);
      return td;
    }));
    return tr;
  });
  table.replaceChildren(head, ...rows);
}

function show(text, result) {
  output.textContent = result.translatedText;
  output.dataset.source = text;  // which input this translation is of (the browser test waits on it)
  const dropped = result.droppedCharacters || [];
  $("dropped").hidden = dropped.length === 0;
  $("dropped").textContent = "Left out (the model never saw them): " + dropped.map((c) => JSON.stringify(c)).join(" ");
  // the model read the text without the characters it never saw
  showAttention([...text].filter((c) => !dropped.includes(c)).join(""), result.translatedText, result.attention);
  const alternatives = result.alternatives || [];
  $("alternatives-box").hidden = alternatives.length === 0;
  $("alternatives").replaceChildren(...alternatives.map((a) => {
    const li = document.createElement("li");
    li.textContent = a;
    return li;
  }));
}

async function translate() {
  const text = source.value.trim();
  const mine = ++sequence;
  if (pending) pending.abort();
  if (!text) {
    show("", { translatedText: "" });
    statusLine.textContent = "";
    $("detected").textContent = "";
    return;
  }
  pending = new AbortController();
  const html = $("html").checked;
  const body = { q: text, source: $("source-language").value, target: "fr", format: html ? "html" : "text",
                 alternatives: settings.beamWidth - 1 };
  if (settings.keyRequired) body.api_key = $("api-key").value;
  if (settings.attention && !html) body.attention = true;
  statusLine.className = "meta";
  statusLine.textContent = "translating…";
  const started = performance.now();
  try {
    const response = await fetch("/translate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      signal: pending.signal,
    });
    const result = await response.json();
    if (mine !== sequence) return;  // a newer request is on its way
    if (!response.ok) {
      show(text, { translatedText: "" });  // no translation, alternatives or attention of an earlier text
      $("detected").textContent = "";
      throw new Error(result.error || response.statusText);
    }
    show(text, result);
    const found = result.detectedLanguage;
    $("detected").textContent = found ? `· detected: ${languageNames[found.language] || found.language} ` +
      `(confidence ${Math.round(found.confidence)})` : "";
    statusLine.textContent = Math.round(performance.now() - started) + " ms";
  } catch (e) {
    if (e.name === "AbortError" || mine !== sequence) return;
    statusLine.className = "meta error";
    statusLine.textContent = "Error: " + e.message;
  }
}

function schedule() {
  $("count").textContent = source.value.length;
  clearTimeout(timer);
  timer = setTimeout(translate, DEBOUNCE_MS);
}
source.addEventListener("input", schedule);
$("source-language").addEventListener("change", schedule);
$("html").addEventListener("change", schedule);
loadSettings().then(() => { if (source.value.trim()) translate(); });
