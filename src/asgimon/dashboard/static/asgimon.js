// Live figures: one EventSource per page with a [data-stream] section; it reconnects by
// itself (sending Last-Event-ID) when the server ends a stream. Without JavaScript the page
// shows the figures as of its load.
"use strict";
(function () {
  const section = document.querySelector("[data-stream]");
  if (!section || !window.EventSource) return;
  const state = section.querySelector("[data-live-state]");
  const fields = section.querySelectorAll("[data-live]");
  const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, minimumFractionDigits: 1 });
  const whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decimals = { requestsPerSecond: true, inFlight: true };

  function show(event) {
    let figures;
    try { figures = JSON.parse(event.data); } catch (e) { return; }
    fields.forEach(function (el) {
      const value = figures[el.dataset.live];
      if (typeof value === "number") {
        el.textContent = (decimals[el.dataset.live] ? number : whole).format(value);
      }
    });
    if (state) {
      state.textContent = "live";
      state.classList.add("on");
    }
  }

  function start() {
    const source = new EventSource(section.dataset.stream);
    source.addEventListener("figures", show);
    source.addEventListener("error", function () {
      if (state && source.readyState === EventSource.CLOSED) {
        state.textContent = "offline";
        state.classList.remove("on");
      }
    });
  }

  // The page already shows the figures as of its load: the stream starts once the page has
  // painted, so that its first read does not compete with the first paint.
  if (document.readyState === "complete") {
    setTimeout(start, 200);
  } else {
    window.addEventListener("load", function () { setTimeout(start, 200); });
  }
})();
