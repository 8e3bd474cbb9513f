"""A static program's symbols (pyelftools): names to addresses, for `pc=SYMBOL[+OFFSET]`
and for campaigns that sweep every instruction of a function."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu.errors import EmuError

_SYMBOL_REF = re.compile(r"^([A-Za-z_.$][\w.$@]*)\s*(?:\+\s*(0[xX][0-9a-fA-F]+|\d+))?$")


@dataclass(frozen=True)
class Symbol:
    """A function or object symbol: where it is (link-time address) and how big."""

    name: str
    address: int
    size: int
    function: bool


@lru_cache(maxsize=16)
def symbols(path: str) -> dict[str, Symbol]:
    """The named FUNC and OBJECT symbols of the ELF file at `path` (of several with one name:
    the global one, else the first)."""
    found: dict[str, Symbol] = {}
    globals_seen: set[str] = set()
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for section in elf.iter_sections():
                if not isinstance(section, SymbolTableSection):
                    continue
                for sym in section.iter_symbols():
                    kind = sym["st_info"]["type"]
                    if not sym.name or kind not in ("STT_FUNC", "STT_OBJECT") \
                            or sym["st_shndx"] == "SHN_UNDEF":
                        continue
                    symbol = Symbol(sym.name, sym["st_value"], sym["st_size"],
                                    kind == "STT_FUNC")
                    # a global symbol wins over local ones of the same name (static
                    # variables of other files, libc's among them)
                    if sym.name not in found or (sym["st_info"]["bind"] == "STB_GLOBAL"
                                                 and sym.name not in globals_seen):
                        found[sym.name] = symbol
                    if sym["st_info"]["bind"] == "STB_GLOBAL":
                        globals_seen.add(sym.name)
    except OSError as exc:
        raise EmuError(f"{path}: {exc.strerror}") from None
    except ELFError as exc:
        raise EmuError(f"{path}: cannot read symbols ({exc})") from None
    return found


def resolve(path: str, text: str, bias: int = 0) -> int:
    """The address `text` names: a number, or SYMBOL[+OFFSET] of the program at `path`
    (loaded `bias` bytes above its link-time addresses); EmuError if there is no such
    symbol."""
    try:
        return int(text, 0)
    except ValueError:
        pass
    match = _SYMBOL_REF.match(text.strip())
    if match is None:
        raise EmuError(f"pc={text!r}: expected an address or SYMBOL[+OFFSET]")
    name, offset = match.group(1), int(match.group(2) or "0", 0)
    table = symbols(path)
    if name not in table:
        raise EmuError(f"pc={text!r}: {path} has no symbol {name!r}"
                       + ("" if table else " (the program has no symbol table: it is stripped)"))
    return table[name].address + offset + bias


def function_instruction_offsets(path: str, name: str, arch: str) -> list[int]:
    """The offset of every instruction of function `name` from its start (capstone over
    the ELF's bytes); EmuError if there is no such function."""
    from capstone import CS_ARCH_ARM64, CS_ARCH_X86, CS_MODE_64, CS_MODE_ARM, Cs

    table = symbols(path)
    sym = table.get(name)
    if sym is None or not sym.function or not sym.size:
        raise EmuError(f"{path} has no function {name!r} (with a size)")
    with open(path, "rb") as f:
        elf = ELFFile(f)
        code = None
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and \
                    seg["p_vaddr"] <= sym.address < seg["p_vaddr"] + seg["p_filesz"]:
                start = sym.address - seg["p_vaddr"]
                code = seg.data()[start:start + sym.size]
                break
    if code is None:
        raise EmuError(f"{path}: function {name!r} is not in a loaded segment")
    cs = Cs(CS_ARCH_X86, CS_MODE_64) if arch == "x86_64" else Cs(CS_ARCH_ARM64, CS_MODE_ARM)
    return [address - sym.address for address, _, _, _ in cs.disasm_lite(code, sym.address)]
