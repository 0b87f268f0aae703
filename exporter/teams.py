"""Owners to teams, for ``perfecto_owner_info{cloud, owner, team} 1``.

Teams are configured in ``teams:`` (:class:`~exporter.settings.TeamSettings`), in order; an
owner belongs to the first team that lists it exactly or whose pattern matches the whole owner
name, and to ``default_team`` when none does, so every owner has exactly one team and a
``group_left (team)`` join never finds two. The shared owner ``(other)`` (owners beyond
``max_owners``) has the team ``(other)``: its owners may belong to any team, and a usage total
by team still adds up to the lab's.

The mapping is an info metric rather than a ``team`` label on the existing families, as
kube-state-metrics does with its ``*_info`` and ``*_labels`` series: a change of the mapping
then never breaks a counter's history, and the existing series stay as they are.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from .labels import OTHER_OWNER

# Owners already looked up; the owners that reach the info metric are bounded by max_owners
# and max_execution_series, so this holds them all.
_CACHED_OWNERS = 8192


class Teams:
    def __init__(self, teams: Iterable, default: str):
        """``teams``: entries with ``name``, ``owners`` and ``owner_patterns`` (validated)."""
        self.default = default
        self._entries = [(t.name, frozenset(t.owners), [re.compile(p) for p in t.owner_patterns]) for t in teams]
        self.team_of = functools.lru_cache(maxsize=_CACHED_OWNERS)(self._team_of)

    @classmethod
    def from_settings(cls, settings) -> Teams:
        return cls(settings.teams, settings.default_team)

    def _team_of(self, owner: str) -> str:
        if owner == OTHER_OWNER:
            return OTHER_OWNER
        for name, exact, patterns in self._entries:
            if owner in exact or any(pattern.fullmatch(owner) for pattern in patterns):
                return name
        return self.default
