"""Masking of known secrets in text bound for a log line, a metric or an answer.

A secret is masked wherever it appears whole and, when it has at least :data:`PIECE`
characters, wherever any :data:`PIECE`-character piece of it appears: a token that someone
else cut short (a gateway echoing it in an error message, a message shortened for a log line)
is masked as well as the whole token. Secrets shorter than :data:`PIECE` are masked only
whole; secrets shorter than :data:`MIN_SECRET` not at all (masking "ab" would mangle text).

Finding pieces costs one set lookup per :data:`PROBE` characters of text: every piece found
in a text holds an aligned block of :data:`PROBE` characters (at a multiple of ``PROBE``),
and that block is one of the secret's ``PROBE``-grams. Only where such a block is found are
the pieces around it looked up, and a piece found is followed to its end by comparing slices
with the secret. Clean text costs the same whatever the length of the secrets (one set lookup
per ``PROBE`` characters); a long token costs about two short strings per character of memory,
once, when the :class:`Redactor` is built.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "<redacted>"
MIN_SECRET = 4
PIECE = 16
PROBE = PIECE // 2


class Redactor:
    """``redact(text)`` is ``text`` with every configured secret, and every piece of one, masked."""

    __slots__ = ("_whole", "_pieces", "_probes")

    def __init__(self, secrets: Iterable[str] = ()):
        kept = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET}
        self._whole = tuple(sorted((s for s in kept if len(s) < PIECE), key=len, reverse=True))
        long = [s for s in kept if len(s) >= PIECE]
        self._pieces: dict[str, list[tuple[str, int]]] = {}  # piece -> (secret, offset) of each place it is at
        for secret in long:
            for i in range(len(secret) - PIECE + 1):
                self._pieces.setdefault(secret[i:i + PIECE], []).append((secret, i))
        self._probes = frozenset(s[i:i + PROBE] for s in long for i in range(len(s) - PROBE + 1))

    def __bool__(self) -> bool:
        return bool(self._whole or self._pieces)

    def __call__(self, text: str) -> str:
        if self._pieces:
            while spans := self._spans(text):  # again, in case a mask joined two parts into a piece
                kept: list[str] = []
                end = 0
                for start, stop in spans:
                    kept += (text[end:start], MASK)
                    end = stop
                kept.append(text[end:])
                text = "".join(kept)
        for secret in self._whole:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """The disjoint, ordered stretches of ``text`` covered by pieces of a secret."""
        n, probes, pieces = len(text), self._probes, self._pieces
        spans: list[tuple[int, int]] = []
        start = 0  # pieces starting before this were looked for already
        for block in range(0, n - PROBE + 1, PROBE):
            if text[block:block + PROBE] not in probes:
                continue
            # The pieces that hold this block start at most PROBE characters before it.
            start, last = max(start, block - PROBE), min(block, n - PIECE)
            while start <= last:
                places = pieces.get(text[start:start + PIECE])
                if places is None:
                    start += 1
                    continue
                stop = start + max(_common_length(text, start, secret, at) for secret, at in places)
                if spans and start <= spans[-1][1]:
                    spans[-1] = (spans[-1][0], max(stop, spans[-1][1]))
                else:
                    spans.append((start, stop))
                start = stop - PIECE + 1  # every piece starting before this lies inside the span
        return spans


def _common_length(text: str, i: int, secret: str, at: int) -> int:
    """How far ``text`` from ``i`` agrees with ``secret`` from ``at``, known to be PIECE at least."""
    low, high = PIECE, min(len(text) - i, len(secret) - at)
    while low < high:  # a binary search: slices compare at C speed
        middle = (low + high + 1) // 2
        if text[i:i + middle] == secret[at:at + middle]:
            low = middle
        else:
            high = middle - 1
    return low
