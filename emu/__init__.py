"""emu: a paging-faithful emulator — Unicorn runs real guest code, a QNX-style microkernel owns the MMU."""

__version__ = "0.1.0"
