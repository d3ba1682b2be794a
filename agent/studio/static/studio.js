// Chrysalis Studio: live updates (SSE), background Verify, review shortcuts. Pages work without it.
(function () {
  "use strict";
  const page = document.body.dataset.page;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function toast(text) {
    const box = document.getElementById("toasts");
    const el = document.createElement("div");
    el.className = "toast";
    el.textContent = text;
    box.appendChild(el);
    setTimeout(() => el.remove(), 6000);
  }

  function typing() {
    const el = document.activeElement;
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT") && el.type !== "checkbox";
  }

  // Re-render <main> from the server without losing the scroll position.
  let reloading = false;
  async function refreshMain() {
    if (reloading || typing()) return;
    reloading = true;
    try {
      const response = await fetch(location.href, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById("main");
      if (fresh) {
        const open = [...document.querySelectorAll("details[open]")].map((d) => d.closest("[id]") && d.closest("[id]").id + ":" + d.className);
        document.getElementById("main").replaceWith(fresh);
        for (const key of open) {
          const [id, cls] = key.split(":");
          const holder = document.getElementById(id);
          const d = holder && holder.querySelector("details." + cls.split(" ")[0]);
          if (d) d.open = true;
        }
        const badge = doc.getElementById("review-count");
        const mine = document.getElementById("review-count");
        if (mine && badge) mine.textContent = badge.textContent;
        wire();
      }
    } finally {
      reloading = false;
    }
  }

  // -- live updates ------------------------------------------------------------------------------------------
  if (window.EventSource) {
    const live = document.getElementById("live");
    const source = new EventSource("/events");
    source.onopen = () => live && live.classList.add("on");
    source.onerror = () => live && live.classList.remove("on");
    source.addEventListener("evolved", (e) => {
      const data = JSON.parse(e.data);
      const id = data.args.tokenId;
      toast(`Token #${id} evolved to stage ${data.args.stage} (block ${data.block_number})`);
      document.body.dataset.lastEvolved = String(id);
      if (page === "gallery" || page === "review" || page === "ops") refreshMain();
      if (page === "token" && document.body.dataset.token === String(id)) refreshMain();
    });
    for (const name of ["requested", "refreshed", "transfer", "cancelled"]) {
      source.addEventListener(name, () => {
        if (page === "gallery" || page === "ops" || page === "token") refreshMain();
      });
    }
    source.addEventListener("review", () => {
      if (page === "review" || page === "ops" || page === "token") refreshMain();
    });
  }

  // -- Verify in the background ------------------------------------------------------------------------------
  function renderVerify(box, task) {
    box.dataset.task = task.id;
    box.replaceChildren();
    const p = document.createElement("p");
    if (task.state === "queued" || task.state === "running") {
      p.className = "verdict running";
      p.textContent = "Verifying… (" + task.state + ")";
      box.appendChild(p);
      return false;
    }
    if (task.state === "error") {
      p.className = "verdict bad";
      p.textContent = "Could not verify: " + task.error;
      box.appendChild(p);
      if (task.hint) {
        const h = document.createElement("p");
        h.className = "hint";
        h.textContent = "hint: " + task.hint;
        box.appendChild(h);
      }
      return true;
    }
    const r = task.result;
    p.className = "verdict " + (r.match ? "ok" : r.mismatches.length ? "bad" : "warn");
    p.textContent = r.verdict;
    box.appendChild(p);
    if (r.mismatches.length) {
      const table = document.createElement("table");
      table.className = "mismatches";
      table.innerHTML = "<thead><tr><th>field</th><th>expected</th><th>replay</th></tr></thead>";
      const body = document.createElement("tbody");
      for (const m of r.mismatches) {
        const tr = document.createElement("tr");
        for (const v of [m.field, JSON.stringify(m.expected), JSON.stringify(m.actual)]) {
          const td = document.createElement("td");
          const code = document.createElement("code");
          code.className = "wrap";
          code.textContent = v;
          td.appendChild(code);
          tr.appendChild(td);
        }
        body.appendChild(tr);
      }
      table.appendChild(body);
      box.appendChild(table);
    }
    const note = document.createElement("p");
    note.className = "muted small";
    note.textContent = `${r.note} · ${r.checked.length} fields checked in ${r.seconds.toFixed(1)} s`;
    box.appendChild(note);
    return true;
  }

  async function pollVerify(box, id) {
    for (;;) {
      const response = await fetch("/api/verify/" + id, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const task = await response.json();
      if (renderVerify(box, task)) return;
      await new Promise((ok) => setTimeout(ok, 500));
    }
  }

  function wireVerify() {
    for (const form of document.querySelectorAll("form[data-verify]")) {
      const box = form.parentElement.querySelector(".verify-result");
      if (box.dataset.task && box.querySelector(".running")) pollVerify(box, box.dataset.task);
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const response = await fetch(form.action, {
          method: "POST",
          body: new FormData(form),
          headers: { Accept: "application/json", "X-CSRF-Token": csrf },
        });
        const task = await response.json();
        if (!response.ok) {
          renderVerify(box, { id: "", state: "error", error: task.error, hint: task.hint });
          return;
        }
        renderVerify(box, task);
        pollVerify(box, task.id);
      });
    }
  }

  // -- review shortcuts: j/k move, a approve, r reject, g regenerate, x select -------------------------------
  let selected = -1;
  function items() {
    return [...document.querySelectorAll(".review-item")];
  }
  function select(n) {
    const all = items();
    if (!all.length) return;
    selected = Math.max(0, Math.min(all.length - 1, n));
    all.forEach((el, i) => el.classList.toggle("selected", i === selected));
    all[selected].scrollIntoView({ block: "nearest", behavior: "smooth" });
  }
  function current() {
    return items()[selected];
  }
  document.addEventListener("keydown", (event) => {
    if (page !== "review" || typing() || event.ctrlKey || event.metaKey || event.altKey) return;
    const item = current();
    switch (event.key) {
      case "j": select(selected + 1); break;
      case "k": select(selected - 1); break;
      case "a": {
        const form = item && item.querySelector("form.approve");
        if (form) form.requestSubmit();
        break;
      }
      case "r": {
        const input = item && item.querySelector("form.reject input[name=reason]");
        if (input) { event.preventDefault(); input.focus(); }
        break;
      }
      case "g": {
        const form = item && item.querySelector("form.regenerate");
        if (form) form.requestSubmit();
        break;
      }
      case "x": {
        const box = item && item.querySelector(".select input");
        if (box) box.checked = !box.checked;
        break;
      }
      default: return;
    }
  });

  function wire() {
    for (const form of document.querySelectorAll("form[data-autosubmit]")) {
      for (const el of form.querySelectorAll("select")) el.addEventListener("change", () => form.requestSubmit());
    }
    wireVerify();
    if (page === "review" && items().length) select(Math.max(0, Math.min(selected, items().length - 1)));
  }
  wire();
})();
