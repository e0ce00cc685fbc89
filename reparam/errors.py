"""Errors and refusals.

A :class:`Refusal` is not an exception: it is the answer of a rule's check when a merge would not
be exact (or not worth it), carrying the reason that ``explain()`` and the deploy report show.
"""

from __future__ import annotations

from dataclasses import dataclass


class ReparamError(Exception):
    """Raised for bad input: names the module and the reason."""


class NotEquivalentError(AssertionError):
    """Raised by :func:`reparam.assert_equivalent` when two models compute different outputs."""


@dataclass(frozen=True)
class Refusal:
    """Why a rule did not fire at a site. Falsy, so ``if not result`` reads naturally."""

    reason: str

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return self.reason
