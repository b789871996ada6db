// Swagger UI for this server's own schema. A file, not an inline script: the page's CSP allows scripts from 'self' only.
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,  // the default sends the schema to a public validator: nothing leaves this server
});
