"""Server threads that run inside the kernel's scheduler (procnto's memory manager)."""
