// nullport console: live updates for the status and approvals pages. The server pushes an
// event whenever a call waits or is decided, and a tick every two seconds. On each, the page
// re-reads itself: when what it shows changed (its data-version: the calls waiting, the
// channels open), the main section is replaced; otherwise only the live values (data-live:
// counts, bytes, the link) are updated, so nothing moves under a person's cursor. While a
// form field is in use, nothing changes.
"use strict";
(function () {
  const main = document.getElementById("main");
  const path = window.location.pathname;
  if (!main || !window.EventSource || (path !== "/" && path !== "/approvals")) return;
  let busy = false;
  function typing() {
    const active = document.activeElement;
    return Boolean(active && active.form && (active.value || active.tagName === "SELECT"));
  }
  function refresh() {
    if (busy || typing()) return;
    busy = true;
    fetch(window.location.href, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : null))
      .then((html) => {
        if (!html || typing()) return;
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (!fresh) return;
        if (fresh.dataset.version !== main.dataset.version) {
          main.dataset.version = fresh.dataset.version;
          main.replaceChildren(...fresh.childNodes);
          return;
        }
        for (const el of fresh.querySelectorAll("[data-live][id]")) {
          const mine = document.getElementById(el.id);
          if (mine && mine.textContent !== el.textContent) mine.textContent = el.textContent;
        }
      })
      .catch(() => {})
      .finally(() => { busy = false; });
  }
  new EventSource("/events").onmessage = refresh;
})();
