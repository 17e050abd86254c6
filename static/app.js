// saescope: token hover read-out and keyboard shortcuts. Everything works without it; it only adds speed.
"use strict";

// Hovering a token shows its text and its title (the activation, or the next-token guesses) in #tok-info;
// without JavaScript the browser shows the same title as a tooltip.
document.addEventListener("mouseover", (event) => {
  const tok = event.target.closest(".tok");
  const info = document.getElementById("tok-info");
  if (!tok || !info) return;
  const what = /^[-+\d.e]+$/.test(tok.title) ? `activation ${tok.title}` : tok.title;
  info.textContent = `${JSON.stringify(tok.textContent)}  ${what}`;
});

// Elements name their keys in data-key (space-separated); links are followed, form fields are focused.
document.addEventListener("keydown", (event) => {
  const target = event.target;
  // Ctrl+Enter (Cmd+Enter) in a text box submits its form: the label editor, "test it", search by text.
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target.matches("textarea") && target.form) {
    event.preventDefault();
    target.form.requestSubmit();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  // Enter on a feature number in a box that names where numbers go (data-jump) opens that feature.
  if (event.key === "Enter" && target.dataset.jump && /^\s*\d+\s*$/.test(target.value)) {
    event.preventDefault();
    window.location.href = target.dataset.jump + target.value.trim();
    return;
  }
  if (target.closest("input, textarea, select, [contenteditable]")) {
    // Esc only leaves the field: Chromium's default for a type=search box would also empty it, and the
    // emptied box would reload the list with every feature.
    if (event.key === "Escape") {
      event.preventDefault();
      target.blur();
    }
    return;
  }
  const el = document.querySelector(`[data-key~="${CSS.escape(event.key)}"]`);
  if (!el) return;
  event.preventDefault();
  if (el.matches("a")) window.location.href = el.href;
  else el.focus();
});
