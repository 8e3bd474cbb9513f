"""The microkernel: processes and threads, the run loop, traps and system calls."""
