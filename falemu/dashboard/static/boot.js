// Loads the page again when its modules could not be loaded. A browser drops the requests it has in flight
// when the machine's network changes (net::ERR_NETWORK_CHANGED), and the machine's network changes each time
// a runner container starts or stops; one failed module leaves the page blank. At most three reloads in a
// row: app.js clears the count once it has rendered.
(function () {
  var KEY = "falemu-dashboard-reloads";
  var done = false;
  function reload() {
    if (done) return;
    done = true;
    var count = Number(sessionStorage.getItem(KEY) || "0");
    if (count >= 3) {
      var root = document.getElementById("root");
      if (root) root.textContent = "The falemu dashboard's scripts did not load. Reload the page to try again.";
      return;
    }
    sessionStorage.setItem(KEY, String(count + 1));
    setTimeout(function () { location.reload(); }, 300);
  }
  window.addEventListener("error", function (e) {
    var el = e.target;
    if (el && (el.tagName === "SCRIPT" || (el.tagName === "LINK" && el.rel === "modulepreload"))) reload();
  }, true);
  window.addEventListener("load", function () {
    setTimeout(function () { if (document.querySelector("#root .boot")) reload(); }, 5000);
  });
})();
