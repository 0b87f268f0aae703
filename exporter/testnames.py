"""Execution names to test names: what the finished-duration histogram by test is keyed by.

CI systems name one test's executions ``CheckoutRegression-1234``, ``Nightly 2026-11-28T02:00``
or ``LoginFlow_3f2a9c1e``: one label value per run would grow without bound and give no test a
history. :class:`TestNames` maps a raw name to a test name and caps how many there are:

1. every match of each pattern of ``execution_name_patterns`` is removed, pattern by pattern, in
   the order listed (the default, :data:`DEFAULT_NAME_PATTERNS`, removes UUIDs, dates with an
   optional time and offset, hexadecimal ids of 7 digits or more that hold a digit, run and
   build numbers anywhere but inside ``[...]``, and trailing numbers, each only as whole words);
2. what the removals leave behind is tidied: brackets left empty go, a run of separators (space,
   ``_ - # . : /``) becomes its first character, and separators at either end go;
3. a name left empty is ``unknown``, like any name Perfecto leaves out.

The first ``max_execution_names`` test names seen get a label of their own, for good (their
histogram stays continuous, like owners' counters); every later one shares ``(other)``. So the
series are bounded whatever names the lab invents, and the names folded are counted.

Trailing numbers go too, so ``Suite1`` and ``Suite2`` are one test: a list of patterns without
that one keeps them apart (and keeps run numbers, which the cap then has to hold).
"""

from __future__ import annotations

import re
from functools import lru_cache

from .counting import FirstSeen
from .search_answer import UNKNOWN
from .settings import DEFAULT_NAME_PATTERNS

OTHER_TEST = "(other)"  # the shared test label beyond max_execution_names
_SEPARATORS = re.compile(r"([\s_#.:/-])[\s_#.:/-]+")
_EDGES = " \t\r\n_#.:/-"
_EMPTY_BRACKETS = re.compile(r"\([\s_#.:/-]*\)|\[[\s_#.:/-]*\]|\{[\s_#.:/-]*\}")  # "(build 12)" gone: "()"


class TestNames:
    """Raw execution name -> capped test name; keeps the first ``cap`` test names for good."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, patterns: tuple[str, ...] = DEFAULT_NAME_PATTERNS, cap: int = 200):
        self.cap = cap
        self._patterns = tuple(re.compile(p) for p in patterns)
        self._labels = FirstSeen(cap, OTHER_TEST)
        # CI names repeat from poll to poll; the cache bounds the regex work, not the names
        self.normalise = lru_cache(maxsize=4096)(self._normalise)

    def _normalise(self, name: str) -> str:
        for pattern in self._patterns:
            name = pattern.sub("", name)
        name = _EMPTY_BRACKETS.sub("", name)
        return _SEPARATORS.sub(r"\1", name).strip(_EDGES) or UNKNOWN

    def __call__(self, name: str) -> str:
        """The test label of an execution named ``name``: its test name, or ``(other)``."""
        return self._labels(self.normalise(name))
