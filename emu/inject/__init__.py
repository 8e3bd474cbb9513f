"""Fault injection: fault specifications, their triggers, and the injector a Machine builds.

The campaign runner (emu/campaign/) drives many injected runs; this package is what one
run needs.
"""
