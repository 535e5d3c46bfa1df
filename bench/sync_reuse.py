"""What a new version of a file costs to move, by edit and by block-reuse scheme: are
inserts (shifted data) worth handling? (issue 16). In process, no peers.

A random file of ``--size-mib`` MiB gets each edit; for each scheme the bytes of the
new version that no block of the old one provides (what must cross the network) are
counted, as a share of the file and in bytes:

* ``p2pshare``: fixed pieces (``--piece-kib``, 1 MiB like p2pshare's default), a piece
  reused if the old file holds the same piece at any piece-aligned offset (what
  ``p2pshare.core.sync.plan_pieces`` does);
* ``fixed 128K``: the same with 128 KiB blocks (Syncthing's smallest block, without its
  weak hash);
* ``any offset 128K``: 128 KiB blocks found at any byte offset of the old file (what
  Syncthing's rolling weak hash and rsync's rolling checksum aim at; measured here as
  an oracle: each block searched for in the old file);
* ``CDC``: content-defined chunks (a Gear rolling hash as in FastCDC, chunks of
  ``--piece-kib`` on average, 1/4 to 4x), a chunk reused if the old file has the same.

The Gear hash runs in pure Python, so the file is small (default 16 MiB); the edits
are scaled with it (1/256 of the file: 1 MiB of 256 MiB).

    .venv/bin/python bench/sync_reuse.py [--size-mib 16] [--piece-kib 64] [--markdown F]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

KiB, MiB = 1024, 1 << 20


def fixed_blocks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def cost_fixed(old: bytes, new: bytes, size: int) -> int:
    have = {hashlib.sha256(b).digest() for b in fixed_blocks(old, size)}
    return sum(len(b) for b in fixed_blocks(new, size) if hashlib.sha256(b).digest() not in have)


def cost_any_offset(old: bytes, new: bytes, size: int) -> int:
    """Blocks of the new file found anywhere in the old one (an oracle for a rolling
    weak hash: a 64-byte probe searched, then the whole block compared)."""
    moved = 0
    for block in fixed_blocks(new, size):
        at, found = old.find(block[:64]), False
        while at != -1:
            if old[at : at + len(block)] == block:
                found = True
                break
            at = old.find(block[:64], at + 1)
        moved += 0 if found else len(block)
    return moved


def _gear_table() -> list[int]:
    rnd = random.Random(16)
    return [rnd.getrandbits(64) for _ in range(256)]


GEAR = _gear_table()


def cdc_chunks(data: bytes, avg: int) -> list[bytes]:
    """Content-defined chunks: a cut where the Gear hash has its top bits zero (a
    FastCDC-style chunker, without normalisation), between avg/4 and 4 x avg."""
    bits = avg.bit_length() - 1
    mask = ((1 << bits) - 1) << (64 - bits)
    lo, hi = avg // 4, avg * 4
    out: list[bytes] = []
    start, n, gear, full = 0, len(data), GEAR, (1 << 64) - 1
    i = 0
    while start < n:
        h = 0
        end = min(start + hi, n)
        i = start + lo
        if i >= end:
            out.append(data[start:end])
            start = end
            continue
        for b in data[start + lo - 64 if lo > 64 else start : i]:  # warm the hash up
            h = ((h << 1) + gear[b]) & full
        while i < end:
            h = ((h << 1) + gear[data[i]]) & full
            i += 1
            if not h & mask:
                break
        out.append(data[start:i])
        start = i
    return out


def cost_cdc(old: bytes, new: bytes, avg: int, cache: dict[int, list[bytes]]) -> int:
    key = id(old)
    if key not in cache:
        cache[key] = cdc_chunks(old, avg)
    have = {hashlib.sha256(c).digest() for c in cache[key]}
    return sum(len(c) for c in cdc_chunks(new, avg) if hashlib.sha256(c).digest() not in have)


def edits(data: bytes, unit: int) -> dict[str, Callable[[], bytes]]:
    mid = len(data) // 2 + unit // 3  # not on a block boundary
    rnd = os.urandom
    odd = unit * 3 // 2 + 17  # an insert that is no multiple of any block size
    return {
        "in place (1/256 of the file)": lambda: data[:mid] + rnd(unit) + data[mid + unit :],
        "append (1/256)": lambda: data + rnd(unit),
        "truncate (1/256)": lambda: data[: len(data) - unit],
        "insert 1 byte in the middle": lambda: data[:mid] + b"x" + data[mid:],
        "insert 1.5/256 in the middle": lambda: data[:mid] + rnd(odd) + data[mid:],
        "delete 100 bytes in the middle": lambda: data[:mid] + data[mid + 100 :],
        "insert 1 byte near the start": lambda: data[:4096] + b"x" + data[4096:],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=16)
    p.add_argument("--piece-kib", type=int, default=64, help="pieces / CDC average (scaled)")
    p.add_argument("--markdown", type=Path)
    args = p.parse_args()
    size = args.size_mib * MiB
    piece = args.piece_kib * KiB
    small = max(piece // 8, 4 * KiB)  # 128 KiB against 1 MiB pieces, scaled
    data = os.urandom(size)
    unit = size // 256
    cache: dict[int, list[bytes]] = {}
    schemes: dict[str, Callable[[bytes], int]] = {
        "p2pshare pieces": lambda new: cost_fixed(data, new, piece),
        f"fixed {small // KiB}K": lambda new: cost_fixed(data, new, small),
        f"any offset {small // KiB}K": lambda new: cost_any_offset(data, new, small),
        "CDC": lambda new: cost_cdc(data, new, piece, cache),
    }
    rows = [["edit", *schemes]]
    t0 = time.monotonic()
    for label, make in edits(data, unit).items():
        new = make()
        row = [label]
        for _, fn in schemes.items():
            moved = fn(new)
            row.append(f"{100 * moved / len(new):.1f}% ({moved / KiB:,.0f} KiB)")
        rows.append(row)
        print(f"[reuse] {label}: {row[1:]}", file=sys.stderr, flush=True)
    head = (
        f"{args.size_mib} MiB of random bytes, pieces and CDC average {args.piece_kib} KiB "
        f"(1/{size // piece} of the file, as 1 MiB is of 256 MiB), small blocks "
        f"{small // KiB} KiB; bytes that must move ({time.monotonic() - t0:.0f} s):\n\n"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    text = head + "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with args.markdown.open("a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
