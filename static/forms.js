// Forms that a person sees: on load, the first field with an error (or a form's alert,
// or the messages of the section the page was sent back to) is scrolled to and focused;
// the label column is offered from the header of the training file chosen in the browser.
// Everything here is an aid: without it, errors are at their fields and the page's
// fragment scrolls to the form.
(function () {
  "use strict";

  function focusFirstError() {
    const field = document.querySelector("form [aria-invalid=true]");
    const alert = document.querySelector("form [role=alert]");
    const target = field || alert || sectionMessages();
    if (!target) return;
    if (!target.matches("input, select, textarea, button, fieldset")) target.tabIndex = -1;
    const focusable = target.matches("fieldset") ? target.querySelector("input") : target;
    target.scrollIntoView({block: "center"});
    (focusable || target).focus({preventScroll: true});
  }

  function sectionMessages() {
    const id = decodeURIComponent(location.hash.slice(1));
    return id ? document.getElementById(id + "-messages") : null;
  }

  // The first record of a CSV text, split as the csv module does (quotes, doubled quotes).
  function csvHeader(text) {
    const names = [];
    let name = "", quoted = false;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (quoted) {
        if (c === '"' && text[i + 1] === '"') { name += '"'; i++; }
        else if (c === '"') quoted = false;
        else name += c;
      } else if (c === '"') quoted = true;
      else if (c === ",") { names.push(name); name = ""; }
      else if (c === "\n" || c === "\r") break;
      else name += c;
    }
    names.push(name);
    return names.filter(function (n) { return n !== ""; });
  }

  function offerColumns(input) {
    const file = document.getElementById(input.dataset.columnsOf);
    if (!file) return;
    let list = document.getElementById(input.getAttribute("list"));
    if (!list) {
      list = document.createElement("datalist");
      list.id = input.getAttribute("list");
      input.after(list);
    }
    file.addEventListener("change", function () {
      const chosen = file.files[0];
      if (!chosen || !/\.csv$/i.test(chosen.name)) return;
      const reader = new FileReader();
      reader.onload = function () {
        list.replaceChildren();
        csvHeader(String(reader.result).replace(/^\uFEFF/, "")).forEach(function (name) {
          const option = document.createElement("option");
          option.value = name;
          list.append(option);
        });
      };
      reader.readAsText(chosen.slice(0, 65536));
    });
  }

  // After the load, so that the browser's own scroll to the page's fragment comes first.
  if (document.readyState === "complete") focusFirstError();
  else window.addEventListener("load", function () { requestAnimationFrame(focusFirstError); });
  document.querySelectorAll("input[data-columns-of][list]").forEach(offerColumns);
})();
