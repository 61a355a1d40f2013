// archer review site: the report language switch and sortable tables. No framework, no network.
(function () {
  var lang = "en";
  try { lang = localStorage.getItem("archer-lang") || "en"; } catch (e) { /* storage off: English */ }
  document.documentElement.setAttribute("data-lang", lang);
})();

function archerSetLang(lang) {
  document.documentElement.setAttribute("data-lang", lang);
  try { localStorage.setItem("archer-lang", lang); } catch (e) { /* storage off: this page only */ }
}

function archerSortKey(cell, numeric) {
  var text = cell.textContent.trim();
  if (!numeric) return text.toLowerCase();
  var v = parseFloat(text.replace(/^[#$]/, ""));
  return isNaN(v) ? null : v;
}

function archerSort(th) {
  var table = th.closest("table");
  var index = Array.prototype.indexOf.call(th.parentNode.children, th);
  var numeric = th.getAttribute("data-sort") === "num";
  var current = th.getAttribute("aria-sort");
  var dir = current ? (current === "ascending" ? "descending" : "ascending") : (numeric ? "descending" : "ascending");
  var body = table.tBodies[0];
  var rows = Array.prototype.map.call(body.rows, function (row, i) {
    return { row: row, i: i, key: archerSortKey(row.cells[index], numeric) };
  });
  var sign = dir === "ascending" ? 1 : -1;
  rows.sort(function (a, b) {
    if (a.key === null || b.key === null) {
      if (a.key === b.key) return a.i - b.i;
      return a.key === null ? 1 : -1;
    }
    if (a.key < b.key) return -sign;
    if (a.key > b.key) return sign;
    return a.i - b.i;
  });
  // Empty the body, then append in order: moving rows from the middle of a long body one by one
  // (appendChild, replaceChildren) takes seconds at 5,000 rows in Chromium; this takes milliseconds.
  body.textContent = "";
  body.append.apply(body, rows.map(function (r) { return r.row; }));
  table.querySelectorAll("th[aria-sort]").forEach(function (h) { h.removeAttribute("aria-sort"); });
  th.setAttribute("aria-sort", dir);
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-set-lang]").forEach(function (button) {
    button.addEventListener("click", function () { archerSetLang(button.getAttribute("data-set-lang")); });
  });
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.tabIndex = 0;
    th.addEventListener("click", function () { archerSort(th); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") archerSort(th); });
  });
});
