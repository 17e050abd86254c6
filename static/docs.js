// saescope: starts Swagger UI on /docs with FastAPI's settings. A file rather than the inline script FastAPI
// writes, so the page works under the Content-Security-Policy (script-src 'self').
"use strict";

window.ui = SwaggerUIBundle({
  url: document.body.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
