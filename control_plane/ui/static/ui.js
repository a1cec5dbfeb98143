// Small conveniences for the admin UI's forms (no inline handlers: the page's
// Content-Security-Policy forbids them). Everything works without this script too.
(function () {
  "use strict";

  // "select all" checkboxes: <input type="checkbox" data-select-all="ids">
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("input[data-select-all]")) return;
    var form = box.form || document;
    form.querySelectorAll('input[type="checkbox"][name="' + box.dataset.selectAll + '"]')
      .forEach(function (other) { other.checked = box.checked; });
  });

  // typed confirmations: the submit button stays disabled until the expected text is typed
  function checkTyped(input) {
    var form = input.form;
    if (!form) return;
    var ok = input.value.trim() === input.dataset.mustEqual;
    form.querySelectorAll('button[type="submit"]').forEach(function (b) { b.disabled = !ok; });
  }
  document.addEventListener("input", function (event) {
    if (event.target.matches && event.target.matches("input[data-must-equal]")) checkTyped(event.target);
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input[data-must-equal]").forEach(checkTyped);
  });
})();
