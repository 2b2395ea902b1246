"""The web server: the shopper's page and the JSON API (`jewelrec serve`)."""

from jewelrec.server.app import create_app, serve

__all__ = ["create_app", "serve"]
