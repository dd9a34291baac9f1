"""The programme-scale benchmark: `python -m bench` (see docs/performance.md)."""
