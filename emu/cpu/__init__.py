"""The CPU layer: the only package that imports unicorn (engine, per-arch ABI, C fast path)."""
