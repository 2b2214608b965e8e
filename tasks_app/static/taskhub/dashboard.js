// The operator's dashboard, live (tasks_app/ops/dashboard_views.py, taskhub/dashboard.html).
//
// Without JavaScript the page is a complete snapshot rendered by the server. With it, this script follows the
// task event stream (GET /api/v1/events/, Server-Sent Events, same-origin with the admin's session) and, when
// events arrive, refetches the live sections (?fragment=live: the same template and selectors as the page)
// and puts them in place: the counters, the chart and the node table change without a reload. Refreshes are
// throttled to one a second however fast events come, and the page keeps a short list of the latest events.
(function () {
  "use strict";

  var MIN_REFRESH_MS = 1000; // a burst of events costs one refetch a second, not one per event
  var MAX_EVENTS = 25;
  var RETRY_MIN_MS = 2000; // after the server refused the stream (a 429 when its slots are full, say)
  var RETRY_MAX_MS = 60000;

  var root = document.getElementById("content-main");
  var sections = document.getElementById("live-sections");
  var status = document.getElementById("live-status");
  var state = document.getElementById("live-state");
  var panel = document.getElementById("live-events");
  var list = document.getElementById("live-event-list");
  if (!root || !sections || !status || !state || !panel || !list || !window.EventSource || !window.fetch) {
    return; // an old browser keeps the static page
  }
  var eventsUrl = root.getAttribute("data-events-url");
  var fragmentUrl = root.getAttribute("data-fragment-url");

  var lastRefresh = 0;
  var timer = null;
  var inFlight = false;
  var again = false; // events arrived while a refresh was in flight: one more after it
  var refreshes = 0;
  var source = null;
  var retryMs = RETRY_MIN_MS;

  function setState(name, text) {
    state.setAttribute("data-state", name);
    state.textContent = text;
    status.hidden = false;
  }

  function refresh() {
    timer = null;
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    again = false;
    lastRefresh = Date.now();
    fetch(fragmentUrl, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (resp) {
        // A lapsed session is redirected to the login page, which is no dashboard to show.
        if (!resp.ok || resp.redirected) {
          throw new Error("the dashboard answered " + resp.status + (resp.redirected ? " (login)" : ""));
        }
        return resp.text();
      })
      .then(function (html) {
        // Markup the server rendered (and escaped) from the same template as the page itself.
        sections.innerHTML = html;
        refreshes += 1;
        sections.setAttribute("data-refreshes", String(refreshes));
        if (source && source.readyState === EventSource.OPEN) {
          setState("live", "live");
        }
      })
      .catch(function (err) {
        setState("error", "not updating: " + err.message);
      })
      .then(function () {
        inFlight = false;
        if (again) {
          schedule();
        }
      });
  }

  function schedule() {
    if (timer !== null) {
      return;
    }
    if (inFlight) {
      again = true;
      return;
    }
    timer = window.setTimeout(refresh, Math.max(0, lastRefresh + MIN_REFRESH_MS - Date.now()));
  }

  function describe(ev) {
    if (ev.kind === "status") {
      return (ev.from_status || "?") + " \u2192 " + (ev.to_status || "?");
    }
    if (ev.kind === "created") {
      return "created" + (ev.to_status ? " (" + ev.to_status + ")" : "");
    }
    return String(ev.kind || "event");
  }

  function show(ev) {
    // Every field arrives from the network: text nodes only, never markup.
    var item = document.createElement("li");
    item.setAttribute("data-task-id", String(ev.task_id));
    item.setAttribute("data-kind", String(ev.kind));
    var at = document.createElement("span");
    at.className = "th-quiet";
    at.textContent = (typeof ev.at === "string" ? ev.at.slice(11, 19) : "") + " ";
    var id = document.createElement("code");
    id.textContent = String(ev.task_id);
    var what = document.createElement("span");
    what.textContent = (ev.task_type ? ev.task_type + ": " : "") + describe(ev) + (ev.node ? " on " + ev.node : "");
    item.appendChild(at);
    item.appendChild(id);
    item.appendChild(what);
    list.insertBefore(item, list.firstChild);
    while (list.children.length > MAX_EVENTS) {
      list.removeChild(list.lastChild);
    }
    panel.hidden = false;
  }

  var lastEventId = ""; // a new EventSource (after a refusal) resumes here, as a reconnect would

  function connect() {
    setState("connecting", "connecting");
    source = new EventSource(lastEventId ? eventsUrl + "?after=" + encodeURIComponent(lastEventId) : eventsUrl);
    source.addEventListener("open", function () {
      retryMs = RETRY_MIN_MS;
      root.classList.add("th-following");
      setState("live", "live");
      // What changed between the page's render (or the last connection) and now.
      schedule();
    });
    source.addEventListener("task", function (msg) {
      lastEventId = msg.lastEventId || lastEventId;
      var ev;
      try {
        ev = JSON.parse(msg.data);
      } catch (e) {
        return;
      }
      show(ev);
      if (ev.kind !== "progress") {
        schedule(); // progress moves no counter, bar or node figure
      }
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        // Refused outright (not a dropped connection, which EventSource retries with Last-Event-ID itself):
        // try again later, backing off.
        root.classList.remove("th-following");
        setState("error", "not live: retrying in " + Math.round(retryMs / 1000) + " s");
        window.setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      } else {
        setState("connecting", "reconnecting");
      }
    });
  }

  // Leaving the page frees the server's stream slot at once rather than at its next write.
  window.addEventListener("pagehide", function () {
    if (source) {
      source.close();
    }
  });
  window.addEventListener("pageshow", function (e) {
    if (e.persisted) {
      connect(); // back from the browser's page cache, with the stream closed above
    }
  });
  connect();
})();
