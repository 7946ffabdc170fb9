// nullport console: live updates. The server pushes an event whenever something changes
// (a call waits or is decided, a channel opens or closes); the page re-reads itself and
// replaces its main section, unless the person is typing in a form.
"use strict";
(function () {
  const main = document.getElementById("main");
  if (!main || !window.EventSource) return;
  let pending = false;
  function refresh() {
    const active = document.activeElement;
    if (active && active.form && active.value) { pending = true; return; }
    pending = false;
    fetch(window.location.href, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : null))
      .then((html) => {
        if (!html) return;
        const doc = new DOMParser().parseFromString(html, "text/html");
        const fresh = doc.getElementById("main");
        if (fresh) main.replaceChildren(...fresh.childNodes);
      })
      .catch(() => {});
  }
  const events = new EventSource("/events");
  events.onmessage = refresh;
  document.addEventListener("focusout", () => { if (pending) setTimeout(refresh, 200); });
})();
