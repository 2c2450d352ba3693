// Flashline sale pages: a countdown to the sale start. No dependencies, no network calls.
(function () {
  "use strict";
  var el = document.querySelector("[data-sale-start]");
  if (!el) return;
  var start = Date.parse(el.getAttribute("data-sale-start"));
  if (isNaN(start)) return;
  var parts = {
    d: el.querySelector("[data-unit=d]"),
    h: el.querySelector("[data-unit=h]"),
    m: el.querySelector("[data-unit=m]"),
    s: el.querySelector("[data-unit=s]"),
  };
  var cta = document.querySelector("[data-sale-cta]");
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function tick() {
    var left = Math.max(0, Math.floor((start - Date.now()) / 1000));
    parts.d.textContent = Math.floor(left / 86400);
    parts.h.textContent = pad(Math.floor(left / 3600) % 24);
    parts.m.textContent = pad(Math.floor(left / 60) % 60);
    parts.s.textContent = pad(left % 60);
    if (left === 0) {
      if (cta) cta.removeAttribute("aria-disabled");
      return;
    }
    setTimeout(tick, 1000 - (Date.now() % 1000));
  }
  tick();
})();
