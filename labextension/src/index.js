// havre-lab: Havre's JupyterLab extension (docs/researcher.md, "Release requests from JupyterLab").
//
// 1. A banner at the top of JupyterLab when a release request of yours was returned to you
//    ("Changes requested") or released in the last RELEASED_DAYS days, linking to it in the
//    egress service (output checking). It asks the service's JSON API, on the same origin, with
//    the browser's own cookies; when that fails (no egress session yet, the service down) it
//    shows nothing and says nothing. The "x" hides a notice until that request changes again
//    (remembered in the browser's localStorage).
// 2. "Add to release request" in the file browser's context menu, for files in the outputs
//    folder: it opens the egress service's page for adding files, with those files ticked, in a
//    new tab (projects/<project>/new?paths=...: pick one of your open requests or start one).
//
// Plain JavaScript (no compiler): built by scripts/build-labextension.sh with
// @jupyterlab/builder into labextension/dist/, which is committed and copied into the notebook
// image. Edit this file, then run the script: tests/unit/test_labextension.py fails otherwise.

import { ILabShell } from "@jupyterlab/application";
import { IFileBrowserFactory } from "@jupyterlab/filebrowser";
import { Widget } from "@lumino/widgets";

/** The folder of the home whose files can be released (the outputs-folder contract). */
const OUTPUTS = "outputs/";
/** How long a release stays in the banner (the egress service's notices page: the same). */
const RELEASED_DAYS = 14;
/** At most one look at the service per this many ms (when the tab comes back into view). */
const RECHECK_MS = 60 * 1000;
const DISMISSED_KEY = "havre-lab:dismissed";
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

function dismissed() {
  try {
    return JSON.parse(window.localStorage.getItem(DISMISSED_KEY) || "[]");
  } catch (err) {
    return [];
  }
}

function dismiss(key) {
  const keys = dismissed().filter((k) => k !== key).slice(-49);
  keys.push(key);
  try {
    window.localStorage.setItem(DISMISSED_KEY, JSON.stringify(keys));
  } catch (err) {
    // private mode or full: the notice comes back on the next load
  }
}

/** The user's requests that need them now, or null when the service can't be asked. */
async function noticesFor(user) {
  let response;
  try {
    response = await fetch(egressBase() + "api/requests", {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
  } catch (err) {
    return null;
  }
  const type = response.headers.get("Content-Type") || "";
  if (!response.ok || !type.startsWith("application/json")) {
    return null; // not signed in to the service yet (its login page), or refused
  }
  let items;
  try {
    items = await response.json();
  } catch (err) {
    return null;
  }
  if (!Array.isArray(items)) {
    items = (items && items.items) || [];
  }
  const since = Date.now() - RELEASED_DAYS * 24 * 3600 * 1000;
  return items.filter(
    (q) =>
      q &&
      q.author === user &&
      (q.state === "returned" ||
        (q.state === "released" && q.updated_at && Date.parse(q.updated_at) >= since))
  );
}

class Banner extends Widget {
  constructor() {
    super();
    this.id = "havre-release-banner";
    this.addClass("havre-ReleaseBanner");
    this.node.setAttribute("role", "status");
    this.node.setAttribute("aria-label", "Your release requests");
    const style = this.node.style;
    style.padding = "4px 12px";
    style.background = "var(--jp-info-color3, #e1f5fe)";
    style.color = "var(--jp-ui-font-color0, #000)";
    style.borderBottom = "1px solid var(--jp-border-color1, #bdbdbd)";
    style.fontSize = "var(--jp-ui-font-size1, 13px)";
    this.hide();
  }

  show_(requests) {
    const node = this.node;
    node.textContent = "";
    const gone = new Set(dismissed());
    const shown = requests.filter((q) => !gone.has(noticeKey(q)));
    for (const q of shown) {
      const line = document.createElement("div");
      line.className = "havre-ReleaseBanner-notice";
      line.dataset.request = q.id;
      line.dataset.state = q.state;
      line.style.display = "flex";
      line.style.gap = "8px";
      line.style.alignItems = "center";
      const label = document.createElement("strong");
      label.textContent = q.state_label || (q.state === "returned" ? "Changes requested" : "Released");
      const text = document.createElement("span");
      text.textContent =
        q.state === "returned"
          ? `Your release request “${q.title}” came back to you.`
          : `Your release request “${q.title}” was released.`;
      const link = document.createElement("a");
      link.href = egressBase() + "requests/" + encodeURIComponent(q.id);
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = q.state === "returned" ? "Open the release request" : "Download the files";
      link.style.textDecoration = "underline";
      const close = document.createElement("button");
      close.type = "button";
      close.className = "havre-ReleaseBanner-dismiss";
      close.textContent = "×";
      close.title = "Hide this notice until the request changes again";
      close.setAttribute("aria-label", `Hide the notice about “${q.title}”`);
      close.style.marginLeft = "auto";
      close.onclick = () => {
        dismiss(noticeKey(q));
        line.remove();
        if (!node.querySelector(".havre-ReleaseBanner-notice")) {
          this.hide();
        }
      };
      line.append(label, text, link, close);
      node.append(line);
    }
    if (shown.length) {
      this.show();
    } else {
      this.hide();
    }
  }
}

/** A notice stays hidden until the request moves again (its state or its last change). */
function noticeKey(q) {
  return `${q.id}:${q.state}:${q.updated_at || ""}`;
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
  description: "Release-request banner and the file browser's Add to release request.",
  autoStart: true,
  requires: [IFileBrowserFactory],
  optional: [ILabShell],
  activate: (app, factory) => {
    const user = pageConfig("hubUser");
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

    if (!user) {
      return; // not started by the hub: no egress service to ask
    }
    const banner = new Banner();
    app.shell.add(banner, "header", { rank: 10 });
    let last = 0;
    const check = async () => {
      if (Date.now() - last < RECHECK_MS) {
        return;
      }
      last = Date.now();
      const requests = await noticesFor(user);
      if (requests !== null) {
        banner.show_(requests);
      }
    };
    app.restored.then(check);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") {
        check();
      }
    });
  },
};

export default plugin;
