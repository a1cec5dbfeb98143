// Live pages: listens to the control plane's change stream (/ui/stream, server-sent events)
// and, when a change concerns this page, fetches the page again and swaps its live regions
// (elements with data-live-region and an id) for the fresh ones. The server renders them, so
// everything shown stays escaped exactly as on a full page load. A region holding the keyboard
// focus is left alone until the focus moves on.
(function () {
  "use strict";
  var body = document.body;
  var mode = body.dataset.live;
  var url = body.dataset.liveUrl;
  if (!mode || !url || !window.EventSource || !window.fetch) return;
  var taskId = body.dataset.liveTask || null;
  var gap = parseInt(body.dataset.liveGap || "1000", 10);
  var status = document.getElementById("live-status");
  var timer = null;
  var last = 0;
  var busy = false;

  function say(text) { if (status) status.textContent = text; }

  function refresh() {
    timer = null;
    if (busy) { schedule(); return; }
    busy = true;
    last = Date.now();
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Live-Refresh": "1" } })
      .then(function (response) {
        if (!response.ok || response.redirected) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live-region]").forEach(function (region) {
          var replacement = fresh.getElementById(region.id);
          if (!replacement || region.contains(document.activeElement)) return;
          region.replaceWith(document.importNode(replacement, true));
        });
        say("Updated " + new Date().toLocaleTimeString());
      })
      .catch(function () { say("Live updates paused: reload the page"); })
      .then(function () { busy = false; });
  }

  function schedule() {
    if (timer !== null) return;
    timer = setTimeout(refresh, Math.max(0, gap - (Date.now() - last)));
  }

  function concernsThisPage(event) {
    if (!taskId) return true;
    try { return JSON.parse(event.data).task_id === taskId; } catch (e) { return false; }
  }

  var source = null;
  var reconnecting = false;

  function connect() {
    source = new EventSource(url);
    source.addEventListener("task", function (event) { if (concernsThisPage(event)) schedule(); });
    ["worker", "dlq"].forEach(function (kind) {
      source.addEventListener(kind, function () { if (!taskId) schedule(); });
    });
    source.addEventListener("open", function () {
      say("Live");
      if (reconnecting) schedule();  // changes made while the stream was down
      reconnecting = false;
    });
    source.addEventListener("error", function () {
      reconnecting = true;
      if (source.readyState !== EventSource.CLOSED) { say("Reconnecting…"); return; }
      // refused (e.g. 429: this login holds its most streams): try again later
      say("Live updates paused; trying again shortly");
      setTimeout(connect, RETRY_MS);
    });
  }

  var RETRY_MS = 15000;  // the server's Retry-After for a refused stream
  connect();
  window.addEventListener("pagehide", function () { if (source) source.close(); });
})();
