"""Torch helpers: distributed set-up, misc utilities, persistence (safe pickles), training statistics."""
