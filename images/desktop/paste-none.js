// Havre (images/desktop): served as desktop/havre-paste.js for a desktop whose project does not
// allow inbound paste (projects.<slug>.desktop_paste: none, the default): no paste box, nothing
// sent. (Were a ClientCutText sent anyway, the desktop's relay would drop it and log
// desktop.paste_refused.)
