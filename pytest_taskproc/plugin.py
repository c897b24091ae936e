"""pytest entry point (placeholder until the plugin lands)."""

from __future__ import annotations
