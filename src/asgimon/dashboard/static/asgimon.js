// Live updates from the stream the page names in body[data-stream]: "figures" events fill
// the [data-live] fields, "notifications" events the header's list. The EventSource
// reconnects by itself (sending Last-Event-ID) when the server ends a stream. Without
// JavaScript the page shows both as of its load.
//
// A stream holds a connection, and over HTTP/1.1 a browser opens six at most to one host,
// so a tab per stream would stall the seventh tab. The tabs showing the same stream share
// one: the tab holding the stream's lock reads it and passes each event on to the others
// over a BroadcastChannel; when it goes, the next tab in line takes the lock and the stream.
"use strict";
(function () {
  const url = document.body.dataset.stream;
  const state = document.querySelector("[data-live-state]");
  const fields = document.querySelectorAll("[data-live]");
  const decimals = { requestsPerSecond: true, inFlight: true };
  // Made at the first figures: a fresh tab's first Intl.NumberFormat loads the locale's
  // data, 15 to 60 ms of the main thread that would otherwise land on the first paint.
  let formats = null;
  function format(name, value) {
    if (!formats) {
      formats = {
        number: new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, minimumFractionDigits: 1 }),
        whole: new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 }),
      };
    }
    return (decimals[name] ? formats.number : formats.whole).format(value);
  }
  const inbox = document.querySelector("[data-inbox]");

  function parsed(event) {
    try { return JSON.parse(event.data); } catch (e) { return null; }
  }

  function showFigures(event) {
    const figures = parsed(event);
    if (!figures) return;
    fields.forEach(function (el) {
      const value = figures[el.dataset.live];
      if (typeof value === "number") {
        el.textContent = format(el.dataset.live, value);
      }
    });
    if (state) {
      state.textContent = "live";
      state.classList.add("on");
    }
  }

  function span(className, text) {
    const el = document.createElement("span");
    el.className = className;
    el.textContent = text;
    return el;
  }

  // Every text goes in as text: a rule's name or summary is never markup.
  function note(item, known) {
    const li = document.createElement("li");
    li.className = known.has(item.id) ? "note" : "note new";
    li.dataset.id = item.id;
    const a = document.createElement("a");
    a.href = item.href;
    const rule = span("note-rule", item.ruleName + " ");
    rule.appendChild(span("sub", item.projectId));
    a.append(span("state " + item.status, item.status), rule,
      span("note-summary", item.summary), span("note-when", item.when));
    li.appendChild(a);
    return li;
  }

  function showNotifications(event) {
    const data = parsed(event);
    if (!data || !inbox) return;
    const list = inbox.querySelector("[data-inbox-list]");
    const known = new Set(Array.from(list.children, function (li) { return li.dataset.id; }));
    const fresh = data.items.filter(function (item) { return !known.has(item.id); });
    list.replaceChildren.apply(list, data.items.map(function (item) { return note(item, known); }));
    const count = inbox.querySelector("[data-inbox-count]");
    count.textContent = data.firing + " firing";
    count.hidden = !data.firing;
    inbox.querySelector("[data-inbox-empty]").hidden = data.items.length > 0;
    if (fresh.length) {
      const news = inbox.querySelector("[data-inbox-news]");
      news.textContent = fresh.map(function (i) { return i.ruleName + ": " + i.status; }).join("; ");
    }
  }

  if (inbox) {
    // Escape or a click elsewhere closes the list, as a menu would.
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && inbox.open) {
        inbox.open = false;
        inbox.querySelector("summary").focus();
      }
    });
    document.addEventListener("click", function (e) {
      if (inbox.open && !inbox.contains(e.target)) inbox.open = false;
    });
  }

  if (!url || !window.EventSource) return;

  const handlers = { figures: showFigures, notifications: showNotifications };

  function offline() {
    if (state) {
      state.textContent = "offline";
      state.classList.remove("on");
    }
  }

  function read(source, also) {
    Object.keys(handlers).forEach(function (type) {
      source.addEventListener(type, function (event) {
        handlers[type](event);
        also(type, event.data);
      });
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        offline();
        also("closed", null);
      }
    });
  }

  function shared() {
    const name = "asgimon-stream " + url;
    const channel = new BroadcastChannel(name);
    const last = {};
    let leading = false;
    channel.addEventListener("message", function (m) {
      const d = m.data || {};
      if (d.type === "hello") {
        // A tab that just opened: the latest of each, rather than a wait for the next.
        if (leading) Object.keys(last).forEach(function (t) { channel.postMessage({ type: t, data: last[t] }); });
      } else if (d.type === "closed") {
        offline();
      } else if (handlers[d.type]) {
        handlers[d.type]({ data: d.data });
      }
    });
    channel.postMessage({ type: "hello" });
    navigator.locks.request(name, function () {
      leading = true;
      read(new EventSource(url), function (type, data) {
        last[type] = data;
        channel.postMessage({ type: type, data: data });
      });
      return new Promise(function () {});  // held until the page goes
    });
  }

  // A page being left (a link followed, a form sent: signing out, say) opens no stream: it
  // would ask with the cookies of the page to come. Where the page stays after all (a
  // download), the stream starts a moment later.
  let leaving = false;
  window.addEventListener("beforeunload", function () { leaving = true; });

  function start() {
    if (leaving) {
      leaving = false;
      setTimeout(start, 1000);
      return;
    }
    if (navigator.locks && window.BroadcastChannel) shared();
    else read(new EventSource(url), function () {});
  }

  // The page already shows the figures as of its load: the stream starts once the page has
  // painted, so that its first read does not compete with the first paint.
  if (document.readyState === "complete") {
    setTimeout(start, 200);
  } else {
    window.addEventListener("load", function () { setTimeout(start, 200); });
  }
})();
