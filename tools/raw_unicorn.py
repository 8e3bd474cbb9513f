"""Run a static ELF on bare Unicorn 2.1.4 in its default TLB mode: the baseline for tools/bench.py.

No MMU of ours and no instrumentation (no block, code or memory hooks): the
PT_LOAD segments are copied into `uc.mem_map` regions, the initial stack is
written with emu's own loader, and a minimal Python syscall hook handles the
few calls glibc's static start-up and the benchmark programs make (brk with a
bump heap, anonymous mmap, arch_prctl(ARCH_SET_FS), write/writev, exit).
Everything else returns -ENOSYS (a few start-up calls get a harmless 0).

    python tools/raw_unicorn.py [--stats FILE] PROGRAM [ARGS...]

Guest output goes to our stdout/stderr. --stats writes JSON with the exit
code and `wall_seconds`: the time from creating the engine to the guest's
exit (loading included, Python start-up and imports excluded), measured the
same way as emu's `host.wall_seconds`.
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
import time

import unicorn
from unicorn import arm64_const as a64
from unicorn import x86_const as x86

from emu.cpu.arch import ARCHES
from emu.loader.elf import read_elf
from emu.loader.stack import ProcessIdentity, build_initial_stack

PAGE = 4096
STACK_TOP = 0x7FFF_FFFF_0000
STACK_SIZE = 1 << 20
MMAP_BASE = 0x7F00_0000_0000
ENOSYS, ENOMEM, EINVAL = 38, 12, 22
ARCH_SET_FS = 0x1002

# syscall name -> number, per architecture (Linux asm/unistd*.h)
_NR = {
    "x86_64": {"write": 1, "writev": 20, "brk": 12, "mmap": 9, "munmap": 11, "mprotect": 10,
               "arch_prctl": 158, "exit": 60, "exit_group": 231, "set_tid_address": 218,
               "set_robust_list": 273, "madvise": 28},
    "aarch64": {"write": 64, "writev": 66, "brk": 214, "mmap": 222, "munmap": 215,
                "mprotect": 226, "exit": 93, "exit_group": 94, "set_tid_address": 96,
                "set_robust_list": 99, "madvise": 233},
}


def _align_up(value: int) -> int:
    return (value + PAGE - 1) & ~(PAGE - 1)


class _StackWriter:
    """The `write(vaddr, data)` object emu.loader.stack.build_initial_stack needs."""

    def __init__(self, uc: unicorn.Uc) -> None:
        self.uc = uc

    def write(self, vaddr: int, data: bytes) -> None:
        self.uc.mem_write(vaddr, data)


class RawRun:
    """One program on one bare Unicorn instance."""

    def __init__(self, program: str, args: list[str], env: list[str]) -> None:
        image = read_elf(program)
        self.spec = spec = ARCHES[image.arch]
        self.nr = {v: k for k, v in _NR[spec.name].items()}
        uc = unicorn.Uc(spec.uc_arch, spec.uc_mode)
        uc.ctl_set_cpu_model(spec.cpu_model)
        if spec.name == "aarch64":
            uc.reg_write(a64.UC_ARM64_REG_CPACR_EL1, 3 << 20)          # FP/SIMD at EL0/EL1
        else:
            uc.reg_write(x86.UC_X86_REG_CR4,
                         uc.reg_read(x86.UC_X86_REG_CR4) | (1 << 9) | (1 << 10))
        self.uc = uc
        self._load(image)
        uc.mem_map(STACK_TOP - STACK_SIZE, STACK_SIZE)
        who = ProcessIdentity(uid=0, gid=0, hwcap=spec.hwcap, platform=spec.platform)
        sp = build_initial_stack(_StackWriter(uc), STACK_TOP, image, [program, *args], env,
                                 program, who, bytes(16))
        uc.reg_write(spec.sp, sp)
        self.entry = image.entry
        self.mmap_next = MMAP_BASE
        self.exit_code: int | None = None
        if spec.name == "x86_64":
            uc.hook_add(unicorn.UC_HOOK_INSN, self._on_syscall, None, 1, 0,
                        x86.UC_X86_INS_SYSCALL)
        uc.hook_add(unicorn.UC_HOOK_INTR, self._on_interrupt)

    def _load(self, image) -> None:
        """Map every page a PT_LOAD segment touches (RWX) and copy the file bytes in."""
        bias = image.load_bias
        pages: set[int] = set()
        for seg in image.segments:
            start = seg.vaddr + bias
            pages.update(range(start & ~(PAGE - 1), _align_up(start + seg.memsz), PAGE))
        run_start = prev = None
        for page in sorted(pages) + [None]:
            if run_start is not None and page != prev + PAGE:
                self.uc.mem_map(run_start, prev + PAGE - run_start)
                run_start = None
            if page is None:
                break
            if run_start is None:
                run_start = page
            prev = page
        with open(image.path, "rb") as f:
            for seg in image.segments:
                f.seek(seg.offset)
                self.uc.mem_write(seg.vaddr + bias, f.read(seg.filesz))
        self.brk_start = self.brk = self.brk_mapped = max(pages) + PAGE

    # ---- syscalls ----

    def _on_syscall(self, uc: unicorn.Uc, _user: object) -> None:
        self._syscall()

    def _on_interrupt(self, uc: unicorn.Uc, intno: int, _user: object) -> None:
        if self.spec.name == "aarch64" and intno == 2:        # svc; PC is already past it
            self._syscall()
            return
        pc = uc.reg_read(self.spec.pc)
        raise SystemExit(f"raw_unicorn: unexpected interrupt {intno} at pc={pc:#x}")

    def _syscall(self) -> None:
        spec, uc = self.spec, self.uc
        name = self.nr.get(uc.reg_read(spec.syscall_nr), "")
        a = [uc.reg_read(r) for r in spec.syscall_args]
        handler = getattr(self, "_sys_" + name, None)
        result = handler(*a) if handler else -ENOSYS
        if result is not None:
            uc.reg_write(spec.syscall_ret, result & 0xFFFF_FFFF_FFFF_FFFF)

    def _sys_write(self, fd: int, buf: int, count: int, *_: int) -> int:
        if fd not in (1, 2):
            return -EINVAL
        data = bytes(self.uc.mem_read(buf, count))
        stream = sys.stdout if fd == 1 else sys.stderr
        stream.buffer.write(data)
        stream.flush()
        return count

    def _sys_writev(self, fd: int, iov: int, iovcnt: int, *_: int) -> int:
        total = 0
        for i in range(iovcnt):
            base, length = struct.unpack("<QQ", self.uc.mem_read(iov + 16 * i, 16))
            if length:
                written = self._sys_write(fd, base, length)
                if written < 0:
                    return written
                total += written
        return total

    def _sys_brk(self, new: int, *_: int) -> int:
        if new < self.brk_start:
            return self.brk
        top = _align_up(new)
        if top > self.brk_mapped:
            self.uc.mem_map(self.brk_mapped, top - self.brk_mapped)
            self.brk_mapped = top
        self.brk = new
        return self.brk

    def _sys_mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, *_: int) -> int:
        if fd != 0xFFFF_FFFF_FFFF_FFFF and fd != 0xFFFF_FFFF:       # only anonymous memory
            return -ENOSYS
        size = _align_up(length)
        base, self.mmap_next = self.mmap_next, self.mmap_next + size
        self.uc.mem_map(base, size)
        return base

    def _sys_munmap(self, *_: int) -> int:
        return 0

    def _sys_mprotect(self, *_: int) -> int:
        return 0

    def _sys_madvise(self, *_: int) -> int:
        return 0

    def _sys_set_tid_address(self, *_: int) -> int:
        return 1000

    def _sys_set_robust_list(self, *_: int) -> int:
        return 0

    def _sys_arch_prctl(self, code: int, addr: int, *_: int) -> int:
        if code != ARCH_SET_FS:
            return -EINVAL
        self.uc.reg_write(x86.UC_X86_REG_FS_BASE, addr)
        return 0

    def _sys_exit_group(self, code: int, *_: int) -> None:
        self.exit_code = code & 0xFF
        self.uc.emu_stop()

    _sys_exit = _sys_exit_group

    # ---- running ----

    def run(self) -> int:
        """Run to the guest's exit; returns its exit status."""
        try:
            self.uc.emu_start(self.entry, 0)
        except unicorn.UcError as exc:
            pc = self.uc.reg_read(self.spec.pc)
            raise SystemExit(f"raw_unicorn: {exc} at pc={pc:#x}") from None
        if self.exit_code is None:
            pc = self.uc.reg_read(self.spec.pc)
            raise SystemExit(f"raw_unicorn: guest stopped without exiting at pc={pc:#x}")
        return self.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stats", metavar="FILE", help="write {exit_code, wall_seconds} JSON")
    parser.add_argument("program")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    started = time.perf_counter()
    code = RawRun(opts.program, opts.args, []).run()
    wall = time.perf_counter() - started
    if opts.stats:
        with open(opts.stats, "w") as f:
            json.dump({"exit_code": code, "wall_seconds": round(wall, 6)}, f)
            f.write("\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
