// saescope contrast page: htmx leaves 4xx answers unswapped; a 422 here is the reason a set was refused
// (rendered by the server as _error.html), so show it in place of the results.
"use strict";

document.body.addEventListener("htmx:beforeSwap", (event) => {
  if (event.detail.target.id === "contrast-results" && event.detail.xhr.status === 422) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
