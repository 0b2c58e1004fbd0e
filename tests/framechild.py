"""A child for tests/test_engine_child_frames.py: answers in awkward but legal (or defective) ways.

Run by :class:`magtape.engine.child.Child` as ``python -m framechild <memory MB>``.
"""

from __future__ import annotations

import os
import sys

from magtape.engine.child import HEADER, ChildSide


def main() -> None:
    side = ChildSide(int(sys.argv[1]))
    out = side._out  # the protocol pipe
    while (frame := side.read()) is not None:
        if frame.op == b"S":  # the echo in three writes, the header split
            data = HEADER.pack(b"K", len(frame.payload)) + frame.payload
            for piece in (data[:2], data[2:7], data[7:]):
                out.write(piece)
                out.flush()
        elif frame.op == b"B":  # a large answer: many reads
            side.write(b"K", os.urandom(3 << 20))
        elif frame.op == b"2":  # two answers to one request: a defect
            out.write(HEADER.pack(b"K", 1) + b"a" + HEADER.pack(b"K", 1) + b"b")
        else:
            side.write(b"K", frame.payload)


if __name__ == "__main__":
    main()
