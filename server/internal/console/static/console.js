// Outpost console: the only script the pages load (no inline script, no
// other origin). It refreshes [data-poll] parts of a page, counts down
// [data-countdown] times and copies [data-copy] text. Pages work without
// it, only less live.
(function () {
  "use strict";

  // poll replaces el's content with the HTML fragment at its data-poll URL
  // (rendered and escaped by the server) every data-every ms, while the page
  // is visible, until the fragment holds a [data-done] element.
  function poll(el) {
    var url = el.getAttribute("data-poll");
    var every = parseInt(el.getAttribute("data-every"), 10) || 3000;
    var busy = false;
    function tick() {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (resp) {
          if (resp.status === 401) { window.location.reload(); return null; }
          if (!resp.ok) { return null; }
          return resp.text();
        })
        .then(function (html) {
          if (html === null) { return; }
          el.innerHTML = html;
          if (el.querySelector("[data-done]")) { clearInterval(timer); }
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }
    var timer = setInterval(tick, every);
    tick();
  }

  // countdown writes the time left until the element's data-countdown.
  function countdown(el) {
    var end = Date.parse(el.getAttribute("data-countdown"));
    function tick() {
      var left = Math.round((end - Date.now()) / 1000);
      if (left <= 0) { el.textContent = "now (expired)"; el.classList.add("expired"); clearInterval(timer); return; }
      var m = Math.floor(left / 60), s = left % 60;
      el.textContent = "in " + (m > 0 ? m + " min " : "") + s + " s";
    }
    var timer = setInterval(tick, 1000);
    tick();
  }

  // copy puts the text of the element named by data-copy on the clipboard.
  function copy(btn) {
    btn.addEventListener("click", function () {
      var src = document.getElementById(btn.getAttribute("data-copy"));
      if (!src || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(src.textContent.trim()).then(function () {
        var label = btn.textContent;
        btn.textContent = "Copied";
        setTimeout(function () { btn.textContent = label; }, 1500);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    document.querySelectorAll("[data-countdown]").forEach(countdown);
    document.querySelectorAll("[data-copy]").forEach(copy);
  });
})();
