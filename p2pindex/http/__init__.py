"""The HTTP face of a node: key API, admin reads, health, metrics and the dashboard."""
