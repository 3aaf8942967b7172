// Tally console: the little JavaScript htmx leaves to us (no inline scripts: the CSP forbids them).
(function () {
  "use strict";
  function notice(text) {
    var box = document.getElementById("notice");
    if (!box) { return; }
    box.textContent = text;
    box.hidden = !text;
    if (text) { window.scrollTo({ top: 0, behavior: "smooth" }); }
  }
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr.status;
    var messages = {
      400: "This form has expired. Reload the page and try again.",
      403: "Your role can look, not change.",
      404: "Not found: it may have been removed.",
      429: "Too many requests. Wait a little and try again."
    };
    notice(messages[status] || "Something went wrong (" + status + "). Reload the page and try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    notice("The server cannot be reached. Check the connection and try again.");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) { notice(""); }
  });
  // Select a freshly minted key so it can be copied at once.
  document.addEventListener("htmx:afterSettle", function () {
    var secret = document.getElementById("new-key");
    if (secret) { secret.focus(); secret.select(); }
  });
  document.addEventListener("focusin", function (event) {
    if (event.target.id === "new-key") { event.target.select(); }
  });
  // On a narrow screen the nav scrolls sideways: bring the current page's link into view
  // (scrolling the nav only, never the page).
  function showCurrentPage() {
    var nav = document.querySelector(".nav");
    var current = nav && nav.querySelector("[aria-current=page]");
    if (!current || nav.scrollWidth <= nav.clientWidth) { return; }
    var navBox = nav.getBoundingClientRect();
    var box = current.getBoundingClientRect();
    nav.scrollLeft += box.left - navBox.left - (navBox.width - box.width) / 2;
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", showCurrentPage);
  } else {
    showCurrentPage();
  }
})();
