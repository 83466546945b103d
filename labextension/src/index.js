// havre-lab: Havre's JupyterLab extension (docs/researcher.md, "Asking for a release").
//
// 1. A banner at the top of JupyterLab when a release request of yours was returned to you
//    ("Changes requested") or released, linking to it in the egress service (output checking)
//    in a new tab. JupyterLab's page may not call the egress service: the hub's guard gives
//    every notebook page a Content-Security-Policy whose connect-src is that server's own
//    addresses only (spawner/download_policy.py, server_sources), so that a script in a
//    notebook's output can't act on the egress service with the researcher's cookies. Instead
//    the egress service's notices page (framed by the hub's home, same origin) leaves a summary
//    in the browser's localStorage (key "havre.notices": whose, when, the requests); the banner
//    reads it at start and when it changes (the "storage" event). Nothing is shown when the key
//    is absent, older than a day, or another user's. The "x" hides a notice until that request
//    changes again (remembered in localStorage too).
// 2. "Add to release request" in the file browser's context menu, for files in the outputs
//    folder: it opens the egress service's page for adding files, with those files listed, in a
//    new tab (projects/<project>/new?paths=...: pick one of your requests that can still take
//    files, whose add-files form then has them ticked, or start one).
//
// Plain JavaScript (no compiler): built by scripts/build-labextension.sh with
// @jupyterlab/builder into labextension/prebuilt/, which is committed and copied into the
// notebook image. Edit this file, then run the script: tests/unit/test_labextension.py fails
// otherwise.

import { IFileBrowserFactory } from "@jupyterlab/filebrowser";
import { Widget } from "@lumino/widgets";

/** The folder of the home whose files can be released (the outputs-folder contract). */
const OUTPUTS = "outputs/";
const COMMAND = "havre:add-to-release-request";
/** Written by the egress service's notices page (egress/web/static/notices.js). */
const NOTICES_KEY = "havre.notices";
/** A summary older than this is not shown (the hub's home was not opened since). */
const STALE_MS = 24 * 3600 * 1000;
const DISMISSED_KEY = "havre-lab:dismissed";
/** One notice's line (px): the shell's header area is as tall as its widgets' min-height. */
const LINE_PX = 26;

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
    const keys = JSON.parse(window.localStorage.getItem(DISMISSED_KEY) || "[]");
    return Array.isArray(keys) ? keys : [];
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
    // storage off or full: the notice comes back on the next load
  }
}

/** A notice stays hidden until the request moves again (its state or its last change). */
function noticeKey(q) {
  return `${q.id}:${q.state}:${q.changed_at || ""}`;
}

/** The user's notices from localStorage: [] when absent, unreadable, stale or someone else's. */
function storedNotices(user) {
  let summary;
  try {
    summary = JSON.parse(window.localStorage.getItem(NOTICES_KEY) || "null");
  } catch (err) {
    return [];
  }
  if (!summary || summary.user !== user || !Array.isArray(summary.notices)) {
    return [];
  }
  const written = Date.parse(summary.written_at || "");
  if (!(Date.now() - written <= STALE_MS)) {
    return []; // stale (or no date): the requests may have moved since
  }
  const base = egressBase();
  return summary.notices.filter(
    (q) => q && q.id && typeof q.url === "string" && q.url.startsWith(base + "requests/")
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
    style.boxSizing = "border-box";
    style.overflow = "hidden";
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
      const returned = q.state === "returned";
      const line = document.createElement("div");
      line.className = "havre-ReleaseBanner-notice";
      line.dataset.request = String(q.id);
      line.dataset.state = String(q.state);
      line.style.display = "flex";
      line.style.gap = "8px";
      line.style.alignItems = "center";
      line.style.height = `${LINE_PX}px`;
      line.style.whiteSpace = "nowrap";
      const label = document.createElement("strong");
      label.textContent = q.state_label || (returned ? "Changes requested" : "Released");
      const text = document.createElement("span");
      text.style.overflow = "hidden";
      text.style.textOverflow = "ellipsis";
      text.textContent = returned
        ? `Your release request “${q.title}” came back to you.`
        : `Your release request “${q.title}” was released.`;
      const link = document.createElement("a");
      link.href = q.url;
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = returned ? "Open the release request" : "Download the files";
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
        this.fitTo(node.querySelectorAll(".havre-ReleaseBanner-notice").length);
      };
      line.append(label, text, link, close);
      node.append(line);
    }
    this.fitTo(shown.length);
  }

  /** Shown with room for `lines` notices (JupyterLab's layout sizes the area from min-height),
   * or hidden when there are none. */
  fitTo(lines) {
    if (!lines) {
      this.hide();
      return;
    }
    this.node.style.minHeight = `${lines * LINE_PX + 9}px`; // + padding and border
    if (this.isHidden) {
      this.show(); // the area refits when a child is shown
    } else if (this.parent) {
      this.parent.fit();
    }
  }
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
      return; // not started by the hub: no egress service, no notices
    }
    const banner = new Banner();
    app.shell.add(banner, "header", { rank: 10 });
    const refresh = () => banner.show_(storedNotices(user));
    app.restored.then(refresh);
    window.addEventListener("storage", (event) => {
      if (event.key === null || event.key === NOTICES_KEY || event.key === DISMISSED_KEY) {
        refresh();
      }
    });
  },
};

export default plugin;
