"""ELF core files from a snapshot's CRIU images (`warmstart cache coredump`): one per process, which gdb opens with
the app's executable (`gdb /usr/bin/python3 core.305`) to show its threads, registers, stacks and memory as they
were at the checkpoint. The way CRIU's own `criu-coredump` does it (coredump/criu_coredump/coredump.py, not packaged
by Debian), smaller: x86-64 only, and file-backed pages that were not dumped are left out of the core (gdb reads
them from the executable and libraries it is given).

Layout (the kernel's binfmt_elf.c, linux/elfcore.h): the ELF header, one PT_NOTE (NT_PRPSINFO, an NT_PRSTATUS per
thread with its registers, NT_AUXV), then a PT_LOAD per memory area whose dumped pages are at their addresses.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmstart.cache.contents import PAGE_SIZE, DumpedMemory, image_dir, load_image
from warmstart.errors import CacheError

# elf.h
ET_CORE, EM_X86_64, EV_CURRENT = 4, 62, 1
PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4
NT_PRSTATUS, NT_PRPSINFO, NT_AUXV = 1, 3, 6
EHDR_SIZE, PHDR_SIZE = 64, 56
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4  # sys/mman.h, as CRIU's vma entries keep them
# struct user_regs_struct (sys/user.h), the order of elf_gregset_t; CRIU's user_x86_regs_entry has the same names.
GREGS = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
         "orig_ax", "ip", "cs", "flags", "sp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")


@dataclass(frozen=True)
class CoreFile:
    pid: int
    comm: str
    threads: int
    path: str
    size_bytes: int


def write_cores(snapshot: Path, out: Path) -> list[CoreFile]:
    """Write core.<pid> for every process of the snapshot dir into `out` (created 0700; existing cores are not
    overwritten). Raises CacheError for images it cannot read or a CPU it does not know."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    with image_dir(snapshot) as images:
        for task in load_image(images, "pstree.img"):
            written.append(_write_core(images, task, out))
    return written


def _write_core(images: Path, task: dict[str, Any], out: Path) -> CoreFile:
    pid = int(task["pid"])
    cores = [(tid, (load_image(images, f"core-{tid}.img") or [{}])[0]) for tid in task.get("threads") or [pid]]
    main = cores[0][1]
    if main.get("mtype") != "X86_64":
        raise CacheError(f"process {pid} is a {main.get('mtype')} process: cores are written for x86-64 only")
    mm = (load_image(images, f"mm-{pid}.img") or [{}])[0]
    pages = _Pages(images, load_image(images, f"pagemap-{pid}.img"))
    notes = _prpsinfo(task, main, mm, pages) + b"".join(_prstatus(task, tid, core) for tid, core in cores)
    auxv = mm.get("mm_saved_auxv") or []
    notes += _note(NT_AUXV, struct.pack(f"<{len(auxv)}Q", *auxv))
    loads = [seg for vma in mm.get("vmas", []) for seg in pages.segments(vma)]
    phnum = 1 + len(loads)
    offset = EHDR_SIZE + PHDR_SIZE * phnum
    phdrs = [struct.pack("<IIQQQQQQ", PT_NOTE, 0, offset, 0, 0, len(notes), 0, 0)]
    first = data_at = _align(offset + len(notes), PAGE_SIZE)
    for start, end, flags, dumped in loads:
        filesz = end - start if dumped else 0  # pages not dumped: gdb reads them from the files mapped there
        phdrs.append(struct.pack("<IIQQQQQQ", PT_LOAD, flags, data_at, start, 0, filesz, end - start, PAGE_SIZE))
        data_at += filesz
    path = out / f"core.{pid}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)  # process memory: private
    with os.fdopen(fd, "wb") as fh:
        fh.write(_ehdr(phnum) + b"".join(phdrs) + notes)
        at = first
        for start, end, _, dumped in loads:
            if dumped:
                for addr, chunk in pages.chunks(start, end):
                    fh.seek(at + addr - start)
                    fh.write(chunk)
                at += end - start
        fh.truncate(at)
    comm = str(main.get("tc", {}).get("comm", ""))
    return CoreFile(pid=pid, comm=comm, threads=len(cores), path=str(path), size_bytes=path.stat().st_size)


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _ehdr(phnum: int) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, EV_CURRENT, 0]) + bytes(8)  # 64-bit, little-endian, System V
    return ident + struct.pack("<HHIQQQIHHHHHH", ET_CORE, EM_X86_64, EV_CURRENT, 0, EHDR_SIZE, 0, 0, EHDR_SIZE,
                               PHDR_SIZE, phnum, 0, 0, 0)


def _note(kind: int, desc: bytes, name: bytes = b"CORE\0") -> bytes:
    return (struct.pack("<III", len(name), len(desc), kind) + name.ljust(_align(len(name), 4), b"\0")
            + desc.ljust(_align(len(desc), 4), b"\0"))


def _prstatus(task: dict[str, Any], tid: int, core: dict[str, Any]) -> bytes:
    """struct elf_prstatus (336 bytes on x86-64): no signal, the ids, zero times, then the general registers."""
    regs = core.get("thread_info", {}).get("gpregs", {})
    ids = struct.pack("<iiii", tid, int(task.get("ppid", 0)), int(task.get("pgid", 0)), int(task.get("sid", 0)))
    desc = (bytes(12) + bytes(4) + bytes(16) + ids + bytes(64)
            + struct.pack("<27Q", *(int(regs.get(r, 0)) & (2**64 - 1) for r in GREGS)) + struct.pack("<ii", 1, 0))
    return _note(NT_PRSTATUS, desc)


def _prpsinfo(task: dict[str, Any], main: dict[str, Any], mm: dict[str, Any], pages: _Pages) -> bytes:
    """struct elf_prpsinfo (136 bytes on x86-64): state, ids, the command name and the start of its arguments."""
    creds = main.get("thread_core", {}).get("creds", {})
    args = pages.read(int(mm.get("mm_arg_start", 0)), min(int(mm.get("mm_arg_end", 0)),
                                                          int(mm.get("mm_arg_start", 0)) + 80))
    comm = str(main.get("tc", {}).get("comm", "")).encode()[:15]
    desc = (struct.pack("<bbbbxxxxQII", 0, ord("S"), 0, 0, 0, int(creds.get("uid", 0)), int(creds.get("gid", 0)))
            + struct.pack("<iiii", int(task["pid"]), int(task.get("ppid", 0)), int(task.get("pgid", 0)),
                          int(task.get("sid", 0)))
            + comm.ljust(16, b"\0") + args.replace(b"\0", b" ").strip()[:79].ljust(80, b"\0"))
    return _note(NT_PRPSINFO, desc)


class _Pages(DumpedMemory):
    """One process's dumped pages (contents.DumpedMemory: its pagemap's PE_PRESENT runs), split and read as the
    core's segments need."""

    def segments(self, vma: dict[str, Any]) -> Iterator[tuple[int, int, int, bool]]:
        """One memory area as (start, end, ELF flags, dumped) pieces: its dumped runs, and the gaps between them."""
        start, end, prot = int(vma["start"]), int(vma["end"]), int(vma["prot"])
        flags = ((PF_R if prot & PROT_READ else 0) | (PF_W if prot & PROT_WRITE else 0)
                 | (PF_X if prot & PROT_EXEC else 0))
        at = start
        for a, size, _ in self.runs:  # in address order, as CRIU writes the pagemap
            lo, hi = max(a, start), min(a + size, end)
            if lo >= hi:
                continue
            if lo > at:
                yield at, lo, flags, False
            yield lo, hi, flags, True
            at = hi
        if at < end:
            yield at, end, flags, False

    def chunks(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """(address, bytes) of the dumped pages within start..end, in 1 MiB pieces."""
        if self.pages is None:
            return
        with open(self.pages, "rb") as fh:
            for a, size, off in self.runs:
                lo, hi = max(a, start), min(a + size, end)
                for at in range(lo, hi, 1 << 20):
                    fh.seek(off + at - a)
                    yield at, fh.read(min(hi - at, 1 << 20))
