"""Find commits that SQLite's WAL recovery would silently drop.

SQLite replays its write-ahead log frame by frame, checking each frame's checksum, which
chains on the one before, and stops at the first frame that fails: every transaction
committed after a damaged frame is dropped without a word. The log itself still shows
them: frames after the damage whose own checksums hold (each against its predecessor's
stored one), one of them marking a commit.

So, when satchel is the process that opens the file first (no other process holds it,
so this open runs SQLite's recovery): `committed_frames` reads frame headers (cheap) to
see whether the log holds commits at all; after SQLite has recovered, `lost_commits`
checks only the frames past what it adopted. A writer killed before it published its
commit leaves valid frames past the adopted ones too, but with no damaged frame before
them: that is not reported.

Format: https://www.sqlite.org/fileformat2.html#walformat
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = (0x377F0682, 0x377F0683)  # checksum words little- or big-endian
HEADER = 32
FRAME_HEADER = 24
SHM_DMS = 128  # the byte every connection keeps a shared lock on, in the -shm file


@dataclass(frozen=True)
class Log:
    """What the frame headers of a WAL file say."""

    page_size: int
    words: str  # struct format of a checksum word pair
    salts: bytes
    header_ok: bool  # the header's own checksum holds
    last_commit: int  # the last commit frame with the header's salts


def others_hold(path: Path) -> bool:
    """True if another process has the database open (holds its -shm lock).

    Opens and closes the -shm file, which drops every POSIX lock this process holds on
    it: call only while this process has no connection to the database.
    """
    try:
        fd = os.open(f"{path}-shm", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, SHM_DMS, 1, 0)
        found = fcntl.fcntl(fd, fcntl.F_GETLK, probe)
        return bool(struct.unpack("hhqqi", found)[0] != fcntl.F_UNLCK)
    finally:
        os.close(fd)


def committed_frames(wal: Path) -> Log | None:
    """The log's shape, if it holds at least one commit frame (or a damaged header)."""
    try:
        with wal.open("rb") as file:
            head = file.read(HEADER)
            if len(head) < HEADER:
                return None
            magic, _, page_size = struct.unpack(">III", head[:12])
            words = ">II" if magic == MAGIC[1] else "<II"
            header_ok = magic in MAGIC and _sum(head[:24], 0, 0, words) == _stored(head[24:])
            salts, last, n = head[16:24], 0, 0
            step = FRAME_HEADER + page_size
            while page_size and len(frame := file.read(FRAME_HEADER)) == FRAME_HEADER:
                n += 1
                # Frames of an earlier pass through the file carry other salts. One
                # with other salts amid ours is damaged: read on past it.
                if frame[8:16] == salts and frame[4:8] != bytes(4):  # size set: a commit
                    last = n
                file.seek(HEADER + n * step)
    except OSError:
        return None
    if not header_ok and n == 0:
        return None
    if header_ok and last == 0:
        return None
    return Log(page_size, words, salts, header_ok, last)


def lost_commits(wal: Path, log: Log, adopted: int) -> str | None:
    """Why commits past frame `adopted` (what SQLite took) are lost, or None if none are."""
    if not log.header_ok:
        return "its header is damaged, so SQLite ignores every transaction in it"
    step = FRAME_HEADER + log.page_size
    with wal.open("rb") as file:
        # The checksum chain starts from the last adopted frame's (or the header's).
        file.seek(HEADER + (adopted - 1) * step + 16 if adopted else 24)
        seed = _stored(file.read(8))
        file.seek(HEADER + adopted * step)
        damaged, lost, n = None, 0, adopted
        while len(frame := file.read(step)) == step:
            n += 1
            holds = frame[8:16] == log.salts and _sum(
                frame[:8] + frame[FRAME_HEADER:], *seed, log.words
            ) == _stored(frame[16:24])
            if not holds and damaged is None:
                damaged = n
            elif holds and damaged is not None and frame[4:8] != bytes(4):
                lost += 1
            seed = _stored(frame[16:24])
    if not lost:
        return None
    return (
        f"frame {damaged} is damaged, and SQLite's recovery would drop at least {lost} "
        f"transaction(s) committed after it"
    )


def _stored(raw: bytes) -> tuple[int, int]:
    first, second = struct.unpack(">II", raw)
    return first, second


def _sum(data: bytes, s0: int, s1: int, words: str) -> tuple[int, int]:
    for x0, x1 in struct.iter_unpack(words, data):
        s0 = (s0 + x0 + s1) & 0xFFFFFFFF
        s1 = (s1 + x1 + s0) & 0xFFFFFFFF
    return s0, s1
