// The per-sample explorer of a ggufbench report. Hand-written, no framework:
// the data is gzip + base64 in #explorer-data; rows are paged so that 10,000
// items and 5 models stay responsive. Model text only ever goes in through
// textContent.
"use strict";
(function () {
  const PAGE = 50;
  const SHORT = 200;
  const $ = (id) => document.getElementById(id);
  const state = {
    data: null, name: "", task: null, metric: null, base: 0, shown: [], page: 0, search: [],
  };

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  async function unpack(node) {
    const b64 = node.textContent.trim();
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  function haystack(item) {
    const parts = [item.p, item.g];
    for (const cell of item.m) {
      if (cell) parts.push(cell.o || "", Object.values(cell.a || {}).join(" "));
    }
    return parts.join("\n").toLowerCase();
  }

  function fillSelect(select, values, chosen) {
    select.replaceChildren();
    for (const value of values) {
      const option = el("option", null, value);
      option.value = value;
      select.append(option);
    }
    if (chosen !== undefined) select.value = chosen;
  }

  function score(cell, metric) {
    return cell && cell.s && metric in cell.s ? cell.s[metric] : undefined;
  }

  function disagrees(item) {
    const base = score(item.m[state.base], state.metric);
    if (base === undefined) return false;
    return item.m.some((cell, i) => {
      const s = score(cell, state.metric);
      return i !== state.base && s !== undefined && s !== base;
    });
  }

  function matches(item, index) {
    if ($("filter-disagree").checked && !disagrees(item)) return false;
    if ($("filter-failed").checked && !item.m.some((c) => c && c.f)) return false;
    if ($("filter-withheld").checked && !item.m.some((c) => c && c.w)) return false;
    const words = $("explorer-search").value.trim().toLowerCase();
    return !words || state.search[index].includes(words);
  }

  function chooseTask(name) {
    state.name = name;
    state.task = state.data.tasks[name];
    state.search = state.task.items.map(haystack);
    const metrics = state.task.metrics;
    fillSelect($("explorer-metric"), metrics.length ? metrics : ["(no per-item score)"]);
    state.metric = metrics[0] || null;
    header();
    refilter();
  }

  function header() {
    const row = el("tr");
    row.append(el("th", "idx", "item"), el("th", "prompt", "prompt"), el("th", "target", "target"));
    state.data.models.forEach((name, i) => {
      row.append(el("th", null, i === state.base ? name + " (baseline)" : name));
    });
    $("explorer-table").tHead.replaceChildren(row);
  }

  function refilter() {
    state.shown = [];
    state.task.items.forEach((item, i) => {
      if (matches(item, i)) state.shown.push(item);
    });
    state.page = 0;
    draw();
  }

  function expandable(text, fromEnd) {
    if (!text || text.length <= SHORT) return el("span", null, text || "–");
    const details = el("details");
    const short = fromEnd ? "…" + text.slice(-SHORT) : text.slice(0, SHORT) + "…";
    details.append(el("summary", null, short), el("pre", null, text));
    return details;
  }

  function modelCell(item, i) {
    const cell = item.m[i];
    const td = el("td");
    if (!cell) {
      td.append(el("span", "empty", "no sample"));
      return td;
    }
    const s = score(cell, state.metric);
    if (s !== undefined) {
      td.append(el("span", "score", Number.isInteger(s) ? s : Number(s).toFixed(3)));
      const base = score(item.m[state.base], state.metric);
      if (i !== state.base && base !== undefined && s !== base) td.classList.add("differs");
    }
    if (cell.f) td.append(el("span", "flag", "failed: " + cell.f));
    if (cell.w) td.append(el("span", "flag", "withheld: " + cell.w));
    if (cell.o) td.append(expandable(cell.o, false));
    const filter = state.metric && state.metric.includes(",") ? state.metric.split(",")[1] : null;
    const answer = cell.a && (cell.a[filter] || (!filter && Object.values(cell.a)[0]));
    if (answer) td.append(el("div", "answer", "answer: " + answer));
    return td;
  }

  function draw() {
    const pages = Math.max(1, Math.ceil(state.shown.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * PAGE;
    const body = $("explorer-table").tBodies[0];
    const rows = state.shown.slice(start, start + PAGE).map((item) => {
      const tr = el("tr", "item");
      tr.dataset.key = item.t + "|" + item.d;
      const prefix = state.name + "_";
      const subtask = item.t.startsWith(prefix) ? item.t.slice(prefix.length) : item.t;
      const where = state.task.subtasks ? subtask.replace(/_/g, " ") + " #" + item.d : "#" + item.d;
      tr.append(el("td", "idx", where));
      const prompt = el("td");
      prompt.append(item.p ? expandable(item.p, true) : el("span", "empty", "prompt not stored"));
      const target = el("td");
      target.append(expandable(item.g, false));
      tr.append(prompt, target);
      state.data.models.forEach((_, i) => tr.append(modelCell(item, i)));
      return tr;
    });
    if (!rows.length) {
      const none = el("td", "empty", "No item matches these filters.");
      none.colSpan = 3 + state.data.models.length;
      rows.push(el("tr"));
      rows[0].append(none);
    }
    body.replaceChildren(...rows);
    const total = state.task.items.length;
    $("explorer-count").textContent =
      `${state.shown.length} of ${total} items · page ${state.page + 1} of ${pages}`;
    $("explorer-prev").disabled = state.page === 0;
    $("explorer-next").disabled = state.page >= pages - 1;
  }

  function debounce(fn, ms) {
    let timer = null;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  async function start() {
    const node = $("explorer-data");
    if (!node || !node.textContent.trim()) return;
    if (typeof DecompressionStream === "undefined") {
      $("explorer-count").textContent =
        "This browser cannot unpack the samples (it needs DecompressionStream: " +
        "Chrome 80, Firefox 113, Safari 16.4 or later).";
      return;
    }
    state.data = await unpack(node);
    state.base = Math.max(0, state.data.models.indexOf(state.data.baseline));
    const names = Object.keys(state.data.tasks);
    if (!names.length) {
      $("explorer-count").textContent = "No samples in this run.";
      return;
    }
    fillSelect($("explorer-task"), names);
    $("explorer-task").addEventListener("change", (e) => chooseTask(e.target.value));
    $("explorer-metric").addEventListener("change", (e) => {
      state.metric = e.target.value;
      refilter();
    });
    for (const id of ["filter-disagree", "filter-failed", "filter-withheld"]) {
      $(id).addEventListener("change", refilter);
    }
    $("explorer-search").addEventListener("input", debounce(refilter, 150));
    $("explorer-prev").addEventListener("click", () => { state.page -= 1; draw(); });
    $("explorer-next").addEventListener("click", () => { state.page += 1; draw(); });
    chooseTask(names[0]);
    document.body.dataset.explorer = "ready";
  }

  start().catch((err) => {
    $("explorer-count").textContent = "The samples could not be read: " + err;
  });
})();
