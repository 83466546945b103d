// The egress pages' only script (served from the service itself: the page CSP allows
// 'self' scripts only). Everything works without it; it adds conveniences.
(function () {
  "use strict";
  // A folder's box ticks or unticks its files.
  document.querySelectorAll("input.select-folder").forEach(function (box) {
    box.addEventListener("change", function () {
      document
        .querySelectorAll('input[name="paths"][data-folder="' + box.dataset.folder + '"]')
        .forEach(function (file) { file.checked = box.checked; });
    });
  });
  // Forms marked data-warn-unsaved: leaving the page with typed, unsaved text asks first.
  var dirty = false;
  document.querySelectorAll("form[data-warn-unsaved]").forEach(function (form) {
    var note = form.querySelector("#unsaved-note");
    form.addEventListener("input", function () {
      dirty = true;
      if (note) { note.hidden = false; }
    });
    form.addEventListener("submit", function () { dirty = false; });
  });
  window.addEventListener("beforeunload", function (event) {
    if (dirty) {
      event.preventDefault();
      event.returnValue = "";
    }
  });
  // A Submit button disabled for missing context: typing there is not saving it yet.
  var submit = document.getElementById("action-submit");
  if (submit && submit.form) {
    submit.form.addEventListener("submit", function (event) {
      if (dirty && !window.confirm("Your context text is not saved yet. Submit anyway?")) {
        event.preventDefault();
      }
    });
  }
}());
