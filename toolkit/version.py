"""The single source of clipedge's version: setup.py, manifests and exported metadata read it."""

__version__ = "0.1.0"
