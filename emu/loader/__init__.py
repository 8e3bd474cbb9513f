"""Program loading: ELF images (pyelftools) and the initial stack."""
