/* Starts Swagger UI on /docs for this server's /openapi.json (kept out of docs.html: the
   Content-Security-Policy runs scripts from this server only, none inline). */
window.addEventListener("DOMContentLoaded", function () {
  "use strict";
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
