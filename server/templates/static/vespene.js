// Vespene UI: tabs, delete confirmations, live build output (SSE) and
// self-refreshing panels. No dependencies; the pages work without it.
(function () {
  "use strict";

  function tabs(list) {
    var buttons = Array.prototype.slice.call(list.querySelectorAll('[role="tab"]'));
    function select(button, focus) {
      buttons.forEach(function (b) {
        var on = b === button;
        b.setAttribute("aria-selected", on ? "true" : "false");
        b.tabIndex = on ? 0 : -1;
        var panel = document.getElementById(b.getAttribute("aria-controls"));
        if (panel) panel.hidden = !on;
      });
      if (focus) button.focus();
    }
    buttons.forEach(function (b, i) {
      b.addEventListener("click", function () { select(b, false); });
      b.addEventListener("keydown", function (e) {
        var next = null;
        if (e.key === "ArrowRight") next = buttons[(i + 1) % buttons.length];
        else if (e.key === "ArrowLeft") next = buttons[(i - 1 + buttons.length) % buttons.length];
        else if (e.key === "Home") next = buttons[0];
        else if (e.key === "End") next = buttons[buttons.length - 1];
        if (next) { e.preventDefault(); select(next, true); }
      });
    });
    // A form with errors opens on the first tab that has one.
    var bad = document.querySelector(".has-error");
    if (bad) {
      var panel = bad.closest('[role="tabpanel"]');
      var button = panel && document.getElementById(panel.getAttribute("aria-labelledby"));
      if (button) select(button, false);
    }
  }

  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
  }

  function setStatus(status) {
    var badge = document.getElementById("build-status");
    if (!badge || !status) return;
    badge.textContent = status;
    badge.className = "badge status-" + status;
  }

  function lineElement(line) {
    var div = document.createElement("div");
    div.className = "line line-" + line.stream;
    div.setAttribute("data-seq", line.seq);
    var label = document.createElement("span");
    label.className = "visually-hidden";
    label.textContent = line.stream + ": ";
    div.appendChild(label);
    div.appendChild(document.createTextNode(line.text));
    return div;
  }

  // "Load earlier lines": the page before the first line shown, fetched from
  // the API and put above it (the link itself opens that page without script).
  function loadEarlier(box) {
    var link = document.getElementById("load-earlier");
    if (!link || !window.fetch) return;
    var id = box.getAttribute("data-build");
    var busy = false;
    link.addEventListener("click", function (e) {
      e.preventDefault();
      if (busy) return;
      var first = parseInt(box.getAttribute("data-first"), 10) || 1;
      var page = parseInt(link.getAttribute("data-page"), 10) || 1000;
      var after = Math.max(0, first - 1 - page);
      var limit = first - 1 - after;
      if (limit <= 0) return;
      busy = true;
      fetch("/api/v1/builds/" + id + "/output?after=" + after + "&limit=" + limit, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (!body) return;
          var lines = document.createDocumentFragment();
          body.lines.forEach(function (l) { if (l.seq < first) lines.appendChild(lineElement(l)); });
          var height = box.scrollHeight;
          box.insertBefore(lines, box.firstChild);
          box.scrollTop += box.scrollHeight - height;
          box.setAttribute("data-first", String(after + 1));
          var count = document.getElementById("earlier-count");
          if (count) count.textContent = String(after);
          link.href = "/ui/builds/" + id + "?before=" + (after + 1);
          if (after <= 0) link.parentNode.hidden = true;
        })
        .catch(function () {})
        .then(function () { busy = false; });
    });
  }

  function liveOutput(box) {
    if (box.getAttribute("data-active") !== "1" || !window.EventSource) return;
    var id = box.getAttribute("data-build");
    var after = box.getAttribute("data-after") || "0";
    var follow = document.getElementById("follow");
    var source = new EventSource("/api/v1/builds/" + id + "/stream?after=" + encodeURIComponent(after));
    var sawLine = false;
    source.addEventListener("line", function (e) {
      var line = JSON.parse(e.data);
      if (box.querySelector('[data-seq="' + line.seq + '"]')) return;
      box.appendChild(lineElement(line));
      box.setAttribute("data-after", line.seq);
      if (!sawLine) { sawLine = true; setStatus("RUNNING"); }
      if (!follow || follow.checked) box.scrollTop = box.scrollHeight;
    });
    source.addEventListener("end", function (e) {
      source.close();
      var end = JSON.parse(e.data);
      setStatus(end.status);
      box.setAttribute("data-active", "0");
      var stop = document.getElementById("stop-form");
      if (stop) stop.hidden = true;
      fetch("/api/v1/builds/" + id, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (b) {
          if (!b) return;
          setStatus(b.status);
          var rc = document.getElementById("build-rc");
          if (rc) rc.textContent = b.return_code === null ? "—" : String(b.return_code);
          var endTime = document.getElementById("build-end");
          if (endTime && b.end_time) endTime.textContent = b.end_time;
        })
        .catch(function () {});
    });
  }

  function refreshing(el) {
    var url = el.getAttribute("data-refresh");
    var busy = false;
    var timer = window.setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (r.status === 401 || r.redirected) { window.clearInterval(timer); return null; }
          return r.ok ? r.text() : null;
        })
        // An unchanged panel is left alone, so a button the user is about to
        // press is not swapped for a copy under the pointer.
        .then(function (html) {
          if (html === null) return;
          var fresh = document.createElement("template");
          fresh.innerHTML = html;
          if (fresh.innerHTML !== el.innerHTML) el.innerHTML = fresh.innerHTML;
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }, 2500);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll('[role="tablist"]').forEach(tabs);
    confirmations();
    var out = document.getElementById("output");
    if (out) { out.scrollTop = out.scrollHeight; loadEarlier(out); liveOutput(out); }
    document.querySelectorAll("[data-refresh]").forEach(refreshing);
  });
})();
