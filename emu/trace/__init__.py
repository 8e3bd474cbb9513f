"""Observing runs: statistics now; events and exporters as the kernel grows."""
