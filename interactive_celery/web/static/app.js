// The operator console's only script. Data never becomes HTML here: live regions are replaced by
// fragments the server rendered with its escaping templates, and stream data is used as text.
(function () {
  "use strict";

  var body = document.body;
  var page = body.dataset.page;
  var incidentId = body.dataset.incident || "";

  // -- relative times ---------------------------------------------------------------------------
  function human(seconds) {
    var s = Math.floor(Math.abs(seconds));
    var units = [["d", 86400, "h", 3600], ["h", 3600, "m", 60], ["m", 60, "s", 1]];
    for (var i = 0; i < units.length; i++) {
      var u = units[i];
      if (s >= u[1]) {
        var rest = Math.floor((s % u[1]) / u[3]);
        return Math.floor(s / u[1]) + u[0] + (rest ? " " + rest + u[2] : "");
      }
    }
    return s + "s";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[data-since]").forEach(function (el) {
      var t = Date.parse(el.dataset.since);
      if (!isNaN(t)) el.textContent = human((now - t) / 1000);
    });
    document.querySelectorAll("time[data-until]").forEach(function (el) {
      var t = Date.parse(el.dataset.until);
      if (!isNaN(t)) el.textContent = t > now ? human((t - now) / 1000) : "due";
    });
  }
  setInterval(tick, 1000);

  // -- refreshing the live region ---------------------------------------------------------------
  var region = document.getElementById("live-region");
  var timer = null;

  function knownIds() {
    var ids = {};
    document.querySelectorAll("tr.incident[data-id]").forEach(function (tr) { ids[tr.dataset.id] = true; });
    return ids;
  }

  function refresh() {
    if (!region || timer) return;
    timer = setTimeout(function () {
      timer = null;
      var before = knownIds();
      var open = {};
      region.querySelectorAll("details[id]").forEach(function (d) { open[d.id] = d.open; });
      fetch(region.dataset.src, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) {
          if (r.redirected || r.status === 401) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html === null) return;
          region.innerHTML = html;
          Object.keys(open).forEach(function (id) {
            var d = document.getElementById(id);
            if (d) d.open = open[id];
          });
          document.querySelectorAll("tr.incident[data-id]").forEach(function (tr) {
            if (!before[tr.dataset.id]) tr.classList.add("new");
          });
          select(selected);
          tick();
        })
        .catch(function () { /* the event stream reports the outage */ });
    }, 120);
  }

  // -- the operator stream ----------------------------------------------------------------------
  var live = document.getElementById("live");

  function setLive(on, text) {
    if (!live) return;
    live.classList.toggle("on", on);
    live.classList.toggle("off", !on);
    live.textContent = text;
  }

  if (body.dataset.live && window.EventSource) {
    // Resume from where the server rendered this page; after a reconnect the browser sends
    // Last-Event-ID itself, and the server replays what was missed either way.
    var position = body.dataset.position;
    var events = new EventSource("/events" + (position ? "?after=" + encodeURIComponent(position) : ""));
    events.addEventListener("ready", function () { setLive(true, "live"); });
    events.onmessage = function (ev) {
      var entry;
      try { entry = JSON.parse(ev.data); } catch (e) { return; }
      if (page === "list" || (page === "detail" && entry.id === incidentId)) refresh();
    };
    events.onerror = function () { setLive(false, "reconnecting…"); };
  } else {
    setLive(false, "not live");
  }

  // -- decisions: confirm in a dialog -----------------------------------------------------------
  var dialog = document.getElementById("confirm");
  var words = {
    retry: "Run the task again under the same task id.",
    fail: "Fail the task for good with its original exception.",
    ignore: "Finish the task as a success, with the result below (JSON, optional)."
  };

  function openDialog(button) {
    if (!dialog || typeof dialog.showModal !== "function") return false;
    var decision = button.dataset.decision;
    var form = document.getElementById("confirm-form");
    form.action = button.form.action;
    document.getElementById("confirm-title").textContent =
      decision.charAt(0).toUpperCase() + decision.slice(1) + " this task?";
    document.getElementById("confirm-text").textContent = words[decision] || "";
    document.getElementById("confirm-result-field").hidden = decision !== "ignore";
    document.getElementById("confirm-ok").textContent = "Confirm " + decision;
    document.getElementById("confirm-ok").className = "primary decide " + decision;
    dialog.showModal();
    document.getElementById("confirm-reason").focus();
    return true;
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest ? ev.target.closest("button.decide[data-decision]") : null;
    if (button && button.form && openDialog(button)) ev.preventDefault();
    if (ev.target.id === "confirm-cancel") dialog.close();
    var row = ev.target.closest ? ev.target.closest("tr.incident[data-href]") : null;
    if (row && !ev.target.closest("a")) window.location.href = row.dataset.href;
  });

  // -- keyboard shortcuts -----------------------------------------------------------------------
  var selected = -1;

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("tr.incident[data-href]")); }

  function select(index) {
    var all = rows();
    all.forEach(function (tr) { tr.classList.remove("selected"); });
    if (!all.length || index < 0) { selected = -1; return; }
    selected = Math.min(index, all.length - 1);
    all[selected].classList.add("selected");
    all[selected].scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(ev.target.tagName) || (dialog && dialog.open);
    if (typing) return; // Esc in the dialog is the browser's own "cancel"
    var key = ev.key;
    if (key === "?") { var help = document.getElementById("help"); help.hidden = !help.hidden; return; }
    if (key === "/") {
      ev.preventDefault();
      var q = document.getElementById("q");
      if (q) q.focus(); else window.location.href = "/history";
      return;
    }
    if (key === "Escape") { select(-1); return; }
    if (key === "j") select(selected + 1);
    else if (key === "k") select(Math.max(0, selected - 1));
    else if ((key === "Enter" || key === "o") && selected >= 0) window.location.href = rows()[selected].dataset.href;
    else if (key === "u" && page !== "list") window.location.href = "/";
    else {
      var button = document.querySelector('button.decide[data-key="' + key + '"]');
      if (button) { ev.preventDefault(); button.click(); }
    }
  });

  tick();
})();
