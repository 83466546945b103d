// havre-lab: Havre's JupyterLab extension (docs/researcher.md, "Asking for a release").
//
// "Add to release request" in the file browser's context menu, for files in the outputs
// folder: it opens the egress service's page for adding files, with those files listed, in a
// new tab (projects/<project>/new?paths=...: pick one of your requests that can still take
// files, whose add-files form then has them ticked, or start one).
//
// No banner about returned or released requests (issue #20 asks for one): JupyterLab's page
// may not call the egress service. The hub's guard gives every notebook page a
// Content-Security-Policy whose connect-src is that server's own addresses only
// (spawner/download_policy.py, server_sources), so that a script in a notebook's output can't
// act on the egress service with the researcher's cookies. Opening a page in a new tab is not
// a connection, so the menu entry works under that policy. See labextension/README.md.
//
// Plain JavaScript (no compiler): built by scripts/build-labextension.sh with
// @jupyterlab/builder into labextension/prebuilt/, which is committed and copied into the
// notebook image. Edit this file, then run the script: tests/unit/test_labextension.py fails
// otherwise.

import { IFileBrowserFactory } from "@jupyterlab/filebrowser";

/** The folder of the home whose files can be released (the outputs-folder contract). */
const OUTPUTS = "outputs/";
const COMMAND = "havre:add-to-release-request";

function pageConfig(name) {
  const el = document.getElementById("jupyter-config-data");
  try {
    return (el && JSON.parse(el.textContent || "{}")[name]) || "";
  } catch (err) {
    return "";
  }
}

/** The egress service's address on this origin: <hub prefix>services/egress/ */
function egressBase() {
  const hubPrefix = pageConfig("hubPrefix") || "/hub/"; // "/hub/" or "/<base>/hub/"
  return hubPrefix.replace(/hub\/?$/, "") + "services/egress/";
}

function outputsFiles(factory) {
  const browser = factory.tracker.currentWidget;
  if (!browser) {
    return [];
  }
  const items = Array.from(browser.selectedItems());
  if (!items.length || items.some((i) => i.type === "directory" || !i.path.startsWith(OUTPUTS))) {
    return [];
  }
  return items.map((i) => i.path.slice(OUTPUTS.length));
}

const plugin = {
  id: "havre-lab:plugin",
  description: "The file browser's Add to release request (files in outputs/).",
  autoStart: true,
  requires: [IFileBrowserFactory],
  activate: (app, factory) => {
    const project = pageConfig("hubServerName");

    app.commands.addCommand(COMMAND, {
      label: "Add to release request",
      caption: "Open output checking with these files ticked, to add them to a release request",
      isVisible: () => Boolean(project) && outputsFiles(factory).length > 0,
      execute: () => {
        const paths = outputsFiles(factory);
        if (!project || !paths.length) {
          return;
        }
        const query = paths.map((p) => "paths=" + encodeURIComponent(p)).join("&");
        const url = `${egressBase()}projects/${encodeURIComponent(project)}/new?${query}`;
        window.open(url, "_blank", "noopener");
      },
    });
    app.contextMenu.addItem({
      command: COMMAND,
      selector: '.jp-DirListing-item[data-isdir="false"]',
      rank: 3,
    });
  },
};

export default plugin;
