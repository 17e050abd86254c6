// saescope contrast page: htmx leaves 4xx answers unswapped; here a 422 says why a set was refused and a 409
// that a direction name is taken (rendered by the server as _error.html), so show them in place.
"use strict";

document.body.addEventListener("htmx:beforeSwap", (event) => {
  const ours = ["contrast-results", "direction-saved"].includes(event.detail.target.id);
  if (ours && [409, 422].includes(event.detail.xhr.status)) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
