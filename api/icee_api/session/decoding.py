"""Incremental UTF-8 decoding of program output.

The kubelet cuts stdout wherever its buffer ends, so a multi-byte character can
be split across two frames; an incremental decoder keeps the partial bytes until
the rest arrives instead of turning each half into U+FFFD.
"""

from __future__ import annotations

import codecs


class StreamDecoder:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        """Whatever is left at end of stream (an incomplete character becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)
