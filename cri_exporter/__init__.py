"""cri-exporter: Prometheus metrics and node diagnosis for CRI container runtimes."""

__version__ = "0.1.0"
