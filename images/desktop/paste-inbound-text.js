// Havre (images/desktop): the "Paste text into the desktop" box, for a desktop whose project
// allows inbound paste (projects.<slug>.desktop_paste: inbound-text). The desktop's front
// serves this file as desktop/havre-paste.js for such a project, and paste-none.js (which adds
// nothing) for every other one; noVNC's page loads it (images/desktop/Dockerfile).
//
// The text goes to the desktop as one RFB ClientCutText (noVNC's clipboardPasteFrom); the
// desktop's relay (rfb_relay.py) checks it again, forwards it and writes its audit line; Ctrl+V
// in the desktop then pastes it. Nothing ever comes back: there is no outbound clipboard.
import UI from "./app/ui.js";

// rfb_relay.py's MAX_CHARS: a longer paste would be dropped there
const MAX_CHARS = 16384;
// RFB carries Latin-1; the relay refuses NUL and control characters but tab, LF and CR
const NOT_TEXT = /[^\t\n\r\x20-\x7e\xa0-\xff]/u;

function say(status, sentence) {
    status.textContent = sentence;
}

function build() {
    const panel = document.createElement("div");
    panel.id = "havre_paste";
    const box = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Paste text into the desktop";
    const help = document.createElement("p");
    help.textContent = "Put text here, send it, then press Ctrl+V in the desktop. Text only " +
        "(Latin-1: no emoji or other scripts), up to 16,384 characters; every paste is " +
        "recorded. Nothing can be copied out of the desktop.";
    const text = document.createElement("textarea");
    text.id = "havre_paste_text";
    text.rows = 6;
    text.spellcheck = false;
    text.setAttribute("aria-label", "Text to paste into the desktop");
    const send = document.createElement("button");
    send.id = "havre_paste_send";
    send.type = "button";
    send.textContent = "Send to the desktop's clipboard";
    const status = document.createElement("p");
    status.id = "havre_paste_status";
    status.setAttribute("role", "status");
    box.append(summary, help, text, send);
    panel.append(box, status);
    document.body.append(panel);

    send.addEventListener("click", () => {
        const value = text.value.replace(/\r\n?/g, "\n");
        const bad = value.match(NOT_TEXT);
        if (!value) {
            say(status, "Nothing to send: the box is empty.");
        } else if (bad) {
            const code = bad[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
            say(status, `Not sent: "${bad[0]}" (U+${code}) is not plain Latin-1 text.`);
        } else if (value.length > MAX_CHARS) {
            say(status, `Not sent: ${value.length} characters, the limit is ${MAX_CHARS}.`);
        } else if (!UI.rfb) {
            say(status, "Not sent: the desktop is not connected yet.");
        } else {
            UI.rfb.clipboardPasteFrom(value);
            text.value = "";
            box.open = false;
            say(status, `Sent ${value.length} characters: press Ctrl+V in the desktop.`);
            UI.rfb.focus();
        }
    });
}

if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", build);
} else {
    build();
}
