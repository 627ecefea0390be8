"""The read model over HTTP and the web page: views, routing to the owning worker,
operator actions, the OpenAPI document and the static page."""
