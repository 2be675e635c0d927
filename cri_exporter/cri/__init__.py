"""The CRI reader: the only package that imports the generated protobuf code."""

from cri_exporter.cri.client import CriClient, CriError, resolve_endpoint
from cri_exporter.cri import model

__all__ = ["CriClient", "CriError", "resolve_endpoint", "model"]
