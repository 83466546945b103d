"""The egress service's web layer: pages and API handlers (:mod:`.app`), the OpenAPI
document, the hub OAuth wiring, the templates."""
