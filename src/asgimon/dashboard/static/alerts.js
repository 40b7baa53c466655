// The alert rule form: the fields the chosen type does not use are hidden and left out of
// what is sent, the threshold's unit and the type's defaults shown. Without JavaScript
// every field is there, each hint saying which types it is for, and the server names any
// field that does not apply.
"use strict";
(function () {
  const select = document.querySelector("select[data-rule-type]");
  if (!select) return;
  const form = select.form;

  function part(name) { return form.querySelector('[data-part="' + name + '"]'); }

  function use(el, used) {
    el.hidden = !used;
    el.querySelectorAll("input, select").forEach(function (input) { input.disabled = !used; });
  }

  function update() {
    const option = select.selectedOptions[0];
    if (!option) return;
    const d = option.dataset;
    const filters = (d.filters || "").split(",").filter(Boolean);
    const threshold = form.querySelector("#f-threshold");
    use(part("threshold"), d.threshold !== undefined);
    threshold.placeholder = d.threshold || "";
    form.querySelector("[data-unit-label]").textContent = d.unit;
    form.querySelector("#f-window").placeholder = d.window;
    use(part("statistic"), d.statistic === "yes");
    form.querySelectorAll("[data-filter]").forEach(function (el) {
      use(el, filters.indexOf(el.dataset.filter) >= 0);
    });
    part("filters").hidden = filters.length === 0;
  }

  select.addEventListener("change", update);
  update();
})();
