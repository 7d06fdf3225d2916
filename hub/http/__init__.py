"""The HTTP side: REST API, websocket, OpenAPI document, bearer tokens."""
