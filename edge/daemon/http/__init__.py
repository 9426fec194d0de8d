"""The daemon's HTTP server: health, Prometheus metrics, the JSON API and the live page."""
