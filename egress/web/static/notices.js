// The notices page's only script: it copies the summary the page carries (the JSON block
// #lab-notices: whose, when, the user's returned or released requests) into the browser's
// localStorage, where JupyterLab's banner (labextension/src/index.js) reads it. JupyterLab's
// page may not connect to this service (its Content-Security-Policy); the same origin's
// storage is how the hub home's visit tells it. Nothing here is secret: titles and links.
(function () {
  "use strict";
  var block = document.getElementById("lab-notices");
  if (!block) { return; }
  try {
    var summary = JSON.parse(block.textContent || "{}");
    window.localStorage.setItem(summary.key, JSON.stringify(summary));
  } catch (err) {
    // storage off or full, or no summary: JupyterLab shows no banner
  }
})();
