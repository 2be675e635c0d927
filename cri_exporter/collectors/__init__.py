"""One collector per source; the registry of names lives in registry.py."""
