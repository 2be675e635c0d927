"""Kubernetes resource quantities (k8s.io/apimachinery resource.Quantity) as the kubelet reads them."""
from __future__ import annotations


def parse_quantity(q: str) -> float | None:
    """Bytes of a Kubernetes quantity (100Mi, 1G, 500000k); None if unparseable."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
    q = q.strip()
    for suffix in sorted(units, key=len, reverse=True):
        if q.endswith(suffix):
            try:
                return float(q[: -len(suffix)]) * units[suffix]
            except ValueError:
                return None
    try:
        return float(q)
    except ValueError:
        return None
