"""TF Serving REST API (``/v1/models/...``): routes, bodies, codec and error format."""
