"""The ELF core writer's structures without CRIU images: the kernel's sizes (linux/elfcore.h on x86-64) and how a
memory area is split into dumped runs and the gaps that gdb reads from files."""

from __future__ import annotations

import struct
from pathlib import Path

from warmstart.cache.coredump import GREGS, PAGE_SIZE, PF_R, PF_W, _ehdr, _Pages, _prpsinfo, _prstatus


def test_notes_have_the_kernels_sizes_and_registers_in_user_regs_order() -> None:
    regs = {name: i for i, name in enumerate(GREGS)}
    note = _prstatus({"pid": 300, "ppid": 1, "pgid": 300, "sid": 300}, 301, {"thread_info": {"gpregs": regs}})
    namesz, descsz, kind = struct.unpack_from("<III", note)
    assert (namesz, descsz, kind) == (5, 336, 1) and note[12:17] == b"CORE\0"
    desc = note[20:20 + descsz]
    assert struct.unpack_from("<i", desc, 32)[0] == 301  # pr_pid: the thread
    assert struct.unpack_from("<27Q", desc, 112) == tuple(range(27))
    info = _prpsinfo({"pid": 300}, {"tc": {"comm": "python3"}}, {}, _Pages(Path("."), []))
    assert struct.unpack_from("<III", info)[1:] == (136, 3)
    assert len(_ehdr(3)) == 64 and _ehdr(3)[:4] == b"\x7fELF"


def test_an_area_is_split_into_dumped_runs_and_gaps() -> None:
    pages = _Pages(Path("."), [{"pages_id": 1}, {"vaddr": 0x2000, "nr_pages": 2, "flags": 4},
                               {"vaddr": 0x6000, "nr_pages": 1, "flags": 4}, {"vaddr": 0x8000, "nr_pages": 1,
                                                                              "flags": 0}])
    segs = list(pages.segments({"start": 0x1000, "end": 0x8000, "prot": 3}))
    assert segs == [(0x1000, 0x2000, PF_R | PF_W, False), (0x2000, 0x4000, PF_R | PF_W, True),
                    (0x4000, 0x6000, PF_R | PF_W, False), (0x6000, 0x7000, PF_R | PF_W, True),
                    (0x7000, 0x8000, PF_R | PF_W, False)]
    assert PAGE_SIZE == 0x1000
