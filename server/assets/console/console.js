// Vexil console: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";
  // Switchers submit on change (the Go button stays for keyboards and no-JS).
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.matches && t.matches("select[data-autosubmit]") && t.form) {
      if (t.id === "project-switch") {
        var env = t.form.querySelector("#env-switch");
        if (env) env.disabled = true;
      }
      t.form.submit();
    }
  });
  // Forms with data-confirm ask first (the server also asks when JS is off).
  document.addEventListener("submit", function (e) {
    var f = e.target;
    var msg = f && f.getAttribute && f.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) {
      e.preventDefault();
    }
  });
  // Rollout weights: show the total as the user types.
  function sumRollouts() {
    document.querySelectorAll("[data-rollout]").forEach(function (box) {
      var total = 0;
      box.querySelectorAll("input[data-weight]").forEach(function (i) {
        var v = parseFloat(i.value);
        if (!isNaN(v)) total += v;
      });
      var out = box.querySelector("[data-total]");
      if (out && !box.open) {
        out.textContent = "Total " + (Math.round(total * 1000) / 1000) + "%";
        out.classList.remove("bad");
      } else if (out) {
        out.textContent = "Total " + (Math.round(total * 1000) / 1000) + "%" + (Math.abs(total - 100) < 1e-9 ? "" : " (must be 100%)");
        out.classList.toggle("bad", Math.abs(total - 100) >= 1e-9);
      }
    });
  }
  document.addEventListener("input", sumRollouts);
  document.addEventListener("toggle", sumRollouts, true);
  document.addEventListener("DOMContentLoaded", sumRollouts);
  // A file chosen for a segment list is read into its textarea.
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.matches && t.matches("input[type=file][data-into]")) {
      var area = document.getElementById(t.getAttribute("data-into"));
      var file = t.files && t.files[0];
      if (area && file) {
        file.text().then(function (text) { area.value = text; });
      }
    }
  });
  // "/" focuses the search box, like most consoles.
  document.addEventListener("keydown", function (e) {
    if (e.key === "/" && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName)) {
      var q = document.getElementById("q");
      if (q) { e.preventDefault(); q.focus(); }
    }
  });
})();
