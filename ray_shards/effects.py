"""Carrying out a pure core's effects in order, each under its own guard.

A long operation's core (`ray_shards.rolling`, `ray_shards.resharding`) advances its state in
``step`` and returns the effects the shell must carry out, in order; it believes they were. An effect
that raises must therefore not silently take the rest of the step with it (a checkpoint never
written, a host command never sent that the core then waits for until its timeout, an end never
logged). `carry_out` runs each effect on its own; a failure goes to the core as an event, and the
core answers with what to carry out instead of the effects still left: all of them, some, none, or
others. It knows which of them build on the one that failed.

No Ray here; the effects are whatever the core's are.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import typing

__all__ = ["MAX_FAILURES", "EffectFailure", "carry_out", "describe_error"]

_LOGGER = logging.getLogger("ray_shards.effects")

E = typing.TypeVar("E")

MAX_FAILURES = 16
"""Most failures `carry_out` reports in one call; the effects left after that are skipped (and logged).

The cores only ever shorten what is left, so this is a backstop, not a limit they reach."""


@dataclasses.dataclass(frozen=True, slots=True)
class EffectFailure(typing.Generic[E]):
    """An effect that raised, and how (``"Type: message"``)."""

    effect: E
    error: str


def describe_error(exc: BaseException) -> str:
    """``"Type: message"``: how the cores record every failure (a command's, a start's, an effect's)."""
    return f"{type(exc).__name__}: {exc}"


async def carry_out(
    effects: typing.Iterable[E],
    run: typing.Callable[[E], typing.Awaitable[None]],
    failed: typing.Callable[[E, str, tuple[E, ...]], typing.Iterable[E]],
    *,
    what: str,
    max_failures: int = MAX_FAILURES,
    quiet: bool = False,
) -> list[EffectFailure[E]]:
    """Carry out ``effects`` in order with ``run``; report each one that raises to ``failed``.

    Parameters
    ----------
    effects
        What the core's step returned.
    run
        Carries out one effect.
    failed
        ``failed(effect, error, remaining)``: the core's answer to a failed effect (``error`` is
        ``"Type: message"``; ``remaining`` the effects not carried out yet); it returns the effects to
        carry out instead of ``remaining``.
    what
        The operation, for the log.
    max_failures
        After this many failures in one call the rest is skipped.
    quiet
        Do not log the failures (the simulator's faults are expected; the caller counts them).

    Returns
    -------
    list[EffectFailure]
        The effects that failed, in order (empty when all went through).

    Notes
    -----
    Only `Exception` is caught: a cancellation (or an interpreter exit) still ends the pass.
    """
    pending = collections.deque(effects)
    failures: list[EffectFailure[E]] = []
    while pending:
        effect = pending.popleft()
        try:
            await run(effect)
        except Exception as exc:
            error = describe_error(exc)
            failures.append(EffectFailure(effect, error))
            if not quiet:
                _LOGGER.error("%s: carrying out %r failed: %s", what, effect, error, exc_info=exc)
            if len(failures) >= max_failures:
                _LOGGER.error("%s: %s effects failed in one step; skipping the %s left: %r", what, len(failures),
                              len(pending), list(pending))
                break
            pending = collections.deque(failed(effect, error, tuple(pending)))
    return failures
