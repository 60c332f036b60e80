"""Find commits that SQLite's WAL recovery silently drops.

SQLite replays its write-ahead log frame by frame, checking each frame's checksum, which
chains on the one before, and stops at the first frame that fails: every transaction
committed after a damaged frame is dropped without a word (and a damaged log header
drops them all). The log itself still shows them: after the damage come frames whose
checksums hold against their predecessor's stored one, one of them marking a commit.

The check runs when this process is the first to open the file (`first_opener`: no
process, this one included, has it open, so this open runs SQLite's recovery). Holding
the write lock, so that nobody appends to or restarts the log meanwhile, it reads how
many frames SQLite took (`adopted_frames`) and `lost_commits` looks past them. A writer
killed before it published its commit leaves valid frames there too, but no failing
frame before them; a crash (or power loss) in the middle of a transaction can leave a
hole in that transaction's own frames, so it takes a second commit after the failing
frame to prove that acknowledged transactions are lost.

Format: https://www.sqlite.org/fileformat2.html#walformat
"""

from __future__ import annotations

import os
import struct
import sys
import threading
from pathlib import Path
from typing import BinaryIO

if sys.platform != "win32":
    import fcntl

MAGIC = {0x377F0682: "<II", 0x377F0683: ">II"}  # -> struct format of checksum words
NATIVE = "<II" if sys.byteorder == "little" else ">II"  # what SQLite writes here
HEADER = 32
FRAME_HEADER = 24
NOT_A_COMMIT = bytes(4)  # a frame header's "database size after commit" on other frames
SHM_DMS = 128  # the byte of the -shm file every connection keeps a shared lock on
FLOCK = "hhqqi4x"  # Linux's struct flock on 64-bit machines

# Closing a descriptor of a file drops every POSIX lock this process holds on it (its
# own SQLite connections' among them). So a descriptor of a -shm file opened here is
# kept until `release`, after a connection of ours closed, sees no lock on the file.
# OPENING is held while a satchel connection opens or closes and while a probe runs, so
# no connection of ours takes a lock between a probe and its close. (A connection that
# other code opens at that very instant could still lose its locks: POSIX cannot tell.)
OPENING = threading.RLock()
_PROBES: dict[str, tuple[int, int]] = {}  # -shm path -> (inode, descriptor) kept open


def first_opener(path: Path) -> bool:
    """True if no process, this one included, holds the lock every connection keeps on
    the database's -shm file while it is open (Linux; False elsewhere: no check).
    Call with OPENING held until the connection is open."""
    if sys.platform == "win32" or not hasattr(fcntl, "F_OFD_GETLK"):
        return False
    if struct.calcsize("P") != 8:  # FLOCK is the 64-bit layout
        return False
    with OPENING:
        try:
            fd = _descriptor(path)
        except FileNotFoundError:
            return True  # no connection in WAL mode has it open
        except OSError:
            return False
        return _unlocked(fd)


def adopted_frames(path: Path) -> int | None:
    """How many frames of the log SQLite took (mxFrame in its wal-index header, which
    heads the -shm file: https://www.sqlite.org/walformat.html), or None if that cannot
    be read. Call with OPENING and the write lock held, so the header is not changing."""
    with OPENING:
        try:
            raw = os.pread(_descriptor(path), 96, 0)
        except OSError:
            return None
    if len(raw) < 96 or raw[:48] != raw[48:]:  # two copies: equal once written
        return None
    version, _, _, ready, _, _, frames = struct.unpack("=IIIBBHI", raw[:20])
    return frames if ready == 1 and version == 3007000 else None


def release(path: Path) -> None:
    """Close the probe descriptor of `path`'s -shm once no lock is held on it (after a
    connection of ours closed; call with OPENING held)."""
    with OPENING:
        known = _PROBES.get(_shm(path))
        if known is not None and _unlocked(known[1]):
            del _PROBES[_shm(path)]
            os.close(known[1])


def rebooted_since(file: Path) -> bool:
    """True if the machine booted after `file` was last written (Linux): a power loss may
    then have lost or reordered writes that were never synced."""
    try:
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return os.stat(file).st_mtime < boot
    except (OSError, ValueError, StopIteration):
        return False


def _shm(path: Path) -> str:
    return f"{path}-shm"


def _descriptor(path: Path) -> int:
    """This process's kept descriptor of `path`'s -shm file (opened now if need be)."""
    shm = _shm(path)
    inode = os.stat(shm).st_ino
    known = _PROBES.get(shm)
    if known is None or known[0] != inode:
        fd = os.open(shm, os.O_RDONLY | os.O_CLOEXEC)
        if known is not None:
            # That file was deleted, which the last connection closing it does: nobody
            # holds a lock on it any more, so closing its descriptor drops none.
            os.close(known[1])
        known = _PROBES[shm] = (os.fstat(fd).st_ino, fd)
    return known[1]


def _unlocked(fd: int) -> bool:
    """An open-file-description lock probe: unlike a POSIX one, it sees this process's
    POSIX locks too. False when it cannot tell."""
    probe = struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, SHM_DMS, 1, 0)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, probe)
    except OSError:
        return False
    return bool(struct.unpack(FLOCK, answer)[0] == fcntl.F_UNLCK)


def _after_fork() -> None:
    global OPENING
    OPENING = threading.RLock()


os.register_at_fork(after_in_child=_after_fork)


def lost_commits(wal: Path, adopted: int, page_size: int) -> str | None:
    """Why commits past frame `adopted` (the frames SQLite took) are lost, or None if
    none are (or the log changed while being read, so nothing can be proven)."""
    try:
        with wal.open("rb", buffering=0) as file:
            head = file.read(HEADER)
            if len(head) < HEADER:
                return None
            magic, _, size = struct.unpack(">III", head[:12])
            order = MAGIC.get(magic)
            if order and size == page_size and _sum(head[:24], 0, 0, order) == _stored(head[24:]):
                found = _proof(file, adopted, page_size, _seed(file, adopted, page_size), order,
                               salts=head[16:24])  # fmt: skip
                what = f"frame {found[0]} is damaged" if found else ""
            else:  # SQLite ignores the whole log: commits in it are lost
                found = _proof(file, 0, page_size, _stored(head[24:]), NATIVE, salts=None)
                what = "its header is damaged"
    except (OSError, struct.error):
        return None
    if found is None:
        return None
    return (
        f"{what}, and SQLite's recovery drops every transaction committed after it "
        f"(one ends at frame {found[1]})"
    )


def _seed(file: BinaryIO, adopted: int, page_size: int) -> tuple[int, int]:
    """The checksum the frame after `adopted` chains on: that frame's, or the header's."""
    file.seek(HEADER + (adopted - 1) * (FRAME_HEADER + page_size) + 16 if adopted else 24)
    return _stored(file.read(8))


def _proof(
    file: BinaryIO,
    after: int,
    page_size: int,
    seed: tuple[int, int],
    order: str,
    salts: bytes | None,
) -> tuple[int, int] | None:
    """(first failing frame, the second later commit frame that holds) past frame
    `after`, or None.

    A frame holds if it has the log's `salts` (None: its predecessor's, for a log whose
    header is damaged) and its checksum holds against its predecessor's stored one.
    Frames of an earlier pass through the file have other salts: they never hold.
    """
    step = FRAME_HEADER + page_size
    frames = (file.seek(0, os.SEEK_END) - HEADER) // step  # whole ones: SQLite's too
    failed: int | None = 0 if salts is None else None  # a damaged header failed already
    previous, commits = salts, 0
    for n in range(after + 1, frames + 1):
        file.seek(HEADER + (n - 1) * step)
        head = file.read(FRAME_HEADER)
        holds = head[8:16] == (previous if salts is None else salts)
        if holds:  # only then is the page read and summed
            holds = _sum(head[:8] + file.read(page_size), *seed, order) == _stored(head[16:])
        if not holds and failed is None:
            failed = n
        elif holds and failed is not None and head[4:8] != NOT_A_COMMIT:
            # The first commit may end the very transaction a crash cut short, whose
            # frames reached the disk out of order: that one was never acknowledged.
            commits += 1
            if commits == 2:
                return failed, n
        seed, previous = _stored(head[16:24]), head[8:16]
    return None


def _stored(raw: bytes) -> tuple[int, int]:
    """A checksum as stored: two big-endian 32-bit words."""
    first, second = struct.unpack(">II", raw[:8])
    return first, second


def _sum(data: bytes, s0: int, s1: int, order: str) -> tuple[int, int]:
    """SQLite's WAL checksum of `data`, continuing from (s0, s1)."""
    for x0, x1 in struct.iter_unpack(order, data):
        s0 = (s0 + x0 + s1) & 0xFFFFFFFF
        s1 = (s1 + x1 + s0) & 0xFFFFFFFF
    return s0, s1
