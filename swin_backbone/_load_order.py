"""Keep the system zlib (libz.so.1) whole in a process that loads Paddle, in either import order.

Paddle 2.6.2's core library (paddle/base/libpaddle.so) contains a static zlib 1.2.8 whose 40 functions it
exports (unversioned), and it also lists the system libz.so.1 as a dependency without using it. When
libpaddle.so is the first object of the process to need libz.so.1 (`import paddle` before anything that
uses zlib: paddle loads its core first, before numpy), the dynamic linker loads libz.so.1 as a dependency of
libpaddle.so and binds libz's calls to its *own* exported functions in libpaddle's scope, where libpaddle
comes first: libz 1.2.13's inflateInit_ calls libpaddle's inflateInit2_, its inflateInit2_ libpaddle's
inflateReset2, its deflateInit2_ libpaddle's deflateReset, and so on (17 references). zlib's internal state
differs between 1.2.8 and 1.2.13, so every user of libz.so.1 in the process breaks: Pillow's PNG decoder
("codec configuration error when reading image file"; for PaddleSeg, a dead data-loader thread) and
encoder (segfault), Python's zlib module, gzip, numpy's .npz, OpenCV's PNG codec, matplotlib, and the
import of modules that decompress their strings with zlib (lap, pyclipper). Programs, libraries and Pillow
itself always bind to libz.so.1 correctly: only libz's references to itself go astray.

So this module, run as `swin_backbone` is imported:
- before Paddle: loads libz.so.1 by itself (the stdlib zlib module, else ctypes), so libz binds to itself
  and libpaddle.so later reuses it as it is ("preloaded");
- after Paddle: points libz's self-references back at libz (its global offset table entries, found from
  its relocations), as if it had been loaded by itself ("repaired").
Nothing else in the process is changed; libpaddle.so keeps using its own zlib. What no repair can undo is
zlib work done between Paddle's import and this one: a PNG decode then only failed (later ones work), but
creating a compression stream ran zlib 1.2.8 code on a 1.2.13 state, which crashes or corrupts the heap.
So `import swin_backbone` before any such work (ZLIB_STATUS says what happened; require_working_zlib()
raises where the repair was impossible).
"""
import ctypes
import os
import struct
import sys
from typing import Dict, List, Optional, Tuple

_LIBZ = "libz.so.1"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Relocation types whose slot holds a symbol's address (S + A): x86-64 64/GLOB_DAT/JUMP_SLOT, AArch64
# ABS64/GLOB_DAT/JUMP_SLOT.
_ADDRESS_RELOCATIONS = {62: {1, 6, 7}, 183: {257, 1025, 1026}}
_STT_GNU_IFUNC = 10
_RTLD_DI_LINKMAP = 2

_libz_handle = None  # keeps libz.so.1 referenced for the life of the process
_paddle_first = False  # whether paddle's core was already loaded when libz was checked
ZLIB_STATUS = "not checked"
ZLIB_REPAIRED: List[str] = []  # symbols whose libz self-reference was pointed back at libz


class _LinkMap(ctypes.Structure):
    _fields_ = [("l_addr", ctypes.c_size_t), ("l_name", ctypes.c_char_p), ("l_ld", ctypes.c_void_p),
                ("l_next", ctypes.c_void_p), ("l_prev", ctypes.c_void_p)]


def _paddle_core_loaded() -> bool:
    return "paddle.base.libpaddle" in sys.modules or "paddle.fluid.libpaddle" in sys.modules


def _open_loaded_libz():
    try:
        return ctypes.CDLL(_LIBZ, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    except OSError:
        return None


def _self_references(path: str) -> Tuple[int, List[Tuple[str, int, int, int, int]]]:
    """(e_machine, [(name, slot offset, addend, st_value, st_type)]) for relocations of `path` (an ELF64
    little-endian shared object) that take the address of a symbol the object defines itself."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not an ELF64 little-endian object")
    machine = struct.unpack_from("<H", data, 18)[0]
    if machine not in _ADDRESS_RELOCATIONS:
        raise ValueError(f"unsupported machine {machine}")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    if not shoff or not shnum:
        raise ValueError("no section headers")
    # (type, offset, size, link, entsize)
    sections = [struct.unpack_from("<4xI16xQQI12xQ", data, shoff + i * shentsize) for i in range(shnum)]
    references = []
    for kind, offset, size, link, entsize in sections:
        if kind != 4 or sections[link][0] != 11:  # SHT_RELA against SHT_DYNSYM
            continue
        _, symtab, _, strings_index, syment = sections[link]
        strtab = sections[strings_index][1]
        for position in range(offset, offset + size, entsize or 24):
            r_offset, r_info, r_addend = struct.unpack_from("<QQq", data, position)
            symbol = r_info >> 32
            if symbol == 0 or (r_info & 0xFFFFFFFF) not in _ADDRESS_RELOCATIONS[machine]:
                continue
            entry = symtab + symbol * (syment or 24)
            st_name, st_info, _, st_shndx, st_value = struct.unpack_from("<IBBHQ", data, entry)
            if st_shndx == 0:  # undefined here: a reference to another library
                continue
            name = data[strtab + st_name:data.index(b"\0", strtab + st_name)].decode()
            references.append((name, r_offset, r_addend, st_value, st_info & 0xF))
    return machine, references


def _address(library, name: str) -> Optional[int]:
    try:
        return ctypes.cast(getattr(library, name), ctypes.c_void_p).value
    except AttributeError:
        return None


def _protections(addresses: List[int]) -> Dict[int, str]:
    """Permissions ("rw-p", ...) of the mappings holding `addresses`, from /proc/self/maps."""
    found = {}
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            start, end = (int(v, 16) for v in span.split("-"))
            found.update((a, perms) for a in addresses if start <= a < end)
    return found


def _write_pointers(writes: List[Tuple[int, int]]) -> None:
    """Store each (address, value); pages that are read-only (RELRO) are made writable for the store."""
    protections = _protections([address for address, _ in writes])
    libc = None
    for address, value in writes:
        perms = protections.get(address)
        if perms is None:
            raise OSError(f"no mapping at {address:#x}")
        if "w" in perms:
            ctypes.c_uint64.from_address(address).value = value
            continue
        if libc is None:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        page = address & ~(_PAGE - 1)
        original = (1 if "r" in perms else 0) | (4 if "x" in perms else 0)
        if libc.mprotect(page, _PAGE, original | 2) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
        try:
            ctypes.c_uint64.from_address(address).value = value
        finally:
            libc.mprotect(page, _PAGE, original)


def _repair(libz) -> List[str]:
    """Point libz's references to its own functions (GOT slots) back at libz; returns the symbols moved."""
    program = ctypes.CDLL(None)  # dlsym on it searches the global scope
    dlinfo = getattr(program, "dlinfo", None) or ctypes.CDLL("libdl.so.2").dlinfo  # libdl before glibc 2.34
    dlinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    link_map = ctypes.POINTER(_LinkMap)()
    if dlinfo(ctypes.c_void_p(libz._handle), _RTLD_DI_LINKMAP, ctypes.byref(link_map)) != 0:
        raise OSError("dlinfo failed")
    base, path = link_map.contents.l_addr, os.fsdecode(link_map.contents.l_name)
    _, references = _self_references(path)
    moves = []
    for name, slot, addend, value, kind in references:
        own = _address(libz, name)  # dlsym on libz's handle: libz's own definition
        if own is None:
            continue
        if kind != _STT_GNU_IFUNC and own != base + value:
            raise ValueError(f"{path} on disk does not match the loaded library ({name})")
        current = ctypes.c_uint64.from_address(base + slot).value
        if current == own + addend:
            continue
        interposed = _address(program, name)
        if interposed is not None and current == interposed + addend:
            continue  # bound by the global scope (LD_PRELOAD, the program): as it would be anyway
        moves.append((name, base + slot, own + addend))
    _write_pointers([(address, target) for _, address, target in moves])
    return sorted({name for name, _, _ in moves})


def ensure_zlib() -> str:
    """Make libz.so.1 bind to itself whatever was imported before; sets and returns ZLIB_STATUS."""
    global _libz_handle, _paddle_first, ZLIB_STATUS
    if not sys.platform.startswith("linux"):
        ZLIB_STATUS = "not needed (not Linux)"
        return ZLIB_STATUS
    libz = _open_loaded_libz()
    if libz is None:
        # Nobody has loaded libz yet (so neither has Paddle): load it on its own, binding to itself. The
        # interpreter's zlib module picks the libz it was built with; ctypes covers a static zlib module.
        try:
            import zlib  # noqa: F401
        except ImportError:
            pass
        libz = _open_loaded_libz()
        if libz is None:
            try:
                libz = ctypes.CDLL(_LIBZ)
            except OSError:
                ZLIB_STATUS = "not needed (no libz.so.1)"
                return ZLIB_STATUS
        _libz_handle = libz
        ZLIB_STATUS = "preloaded"
        return ZLIB_STATUS
    _libz_handle = libz
    _paddle_first = _paddle_core_loaded()
    try:
        moved = _repair(libz)
    except Exception as error:  # unreadable ELF, no dlinfo, mprotect refused...
        ZLIB_STATUS = f"unverified ({type(error).__name__}: {error})"
        return ZLIB_STATUS
    ZLIB_REPAIRED[:] = moved
    ZLIB_STATUS = f"repaired ({len(moved)} references)" if moved else "ok"
    return ZLIB_STATUS


def zlib_is_sound() -> bool:
    """False only where Paddle was loaded before libz.so.1 was checked and the check or repair failed."""
    return not (ZLIB_STATUS.startswith("unverified") and _paddle_first)


def require_working_zlib() -> None:
    """Raise a clear error where libz.so.1 may still be bound to Paddle's zlib (PNG and zlib then fail)."""
    if not zlib_is_sound():
        raise ImportError(
            f"paddle was imported before swin_backbone, and libz.so.1's bindings to paddle's own zlib could not "
            f"be repaired here ({ZLIB_STATUS}): Pillow's PNG codec and every other zlib user can fail or crash. "
            "Import swin_backbone before paddle.")


ensure_zlib()
