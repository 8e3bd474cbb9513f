"""Memory management: physical frames, page tables, address spaces, fault resolution and the pager."""
