"""Build the emu package and its cffi fast-path module (emu.cpu._fastpath)."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["emu", "emu.*"]),
    package_data={"emu.cpu": ["csrc/*.c", "csrc/*.h"], "emu": ["profiles/*.toml"]},
    cffi_modules=["emu/cpu/fastpath_build.py:ffibuilder"],
)
