"""How many connections a ranged download uses: as many as make it faster, found by adding them.

No I/O and no threads here: ``_ranges`` runs the fetchers and calls ``Ramp.check`` from the caller's
thread as the transfer goes; the ramp reads what the fetchers moved and sets the plan's ``width``
(how many fetchers may claim pieces), or gives the rest to the first answer (``go_single``).

Rules:
1. The first answer runs alone for ``PROBE_TIME``: its pace, with what a request waits for its
   answer, says whether other requests could make the file sooner at all (a server whose every
   request costs more than it could save: none is made).
2. Then connections are added in steps, 1 -> 2 -> 4 -> ... -> the most allowed, each step measured
   for ``STEP_TIME`` from when its new connections are answered; the next step comes only while each
   moved ``SPREAD_GAIN`` times as much a second as the one before. A step that did not gain goes
   back to the width before it (to the first answer alone: ``go_single``), for good. So a server
   where more connections cannot help (a CPU-bound loopback, one shared link) costs one extra
   connection for a moment, not all of them.
3. A URL that may expire before the first answer alone could finish leaves no time for steps: every
   connection at once, one region each, kept unless together they beat the first alone.
4. A window ends only once bytes moved in it (at least ``MIN_WINDOW_BYTES``, or it is 4 times as
   long): a window in which a starved process read nothing says nothing of the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from ._range_plan import RangePlan

__all__ = [
    "PROBE_TIME",
    "SPREAD_GAIN",
    "STEP_TIME",
    "Fetchers",
    "Ramp",
    "asking_costs_more",
    "next_width",
    "widths",
]

log = logging.getLogger("tinker_sync")

# The first answer alone for PROBE_TIME seconds; each step of more connections for STEP_TIME
# seconds once its new connections are answered. A step stays only if it moved SPREAD_GAIN times
# as much a second as the step before.
PROBE_TIME = 0.3
STEP_TIME = 0.3
SPREAD_GAIN = 1.2
# A window lasts until at least this many bytes moved in it (or four times its time).
MIN_WINDOW_BYTES = 256 << 10
# A piece takes at least this many times a request's wait (its answer's first byte) to move at the
# first answer's pace: a server whose every request costs much (one that reads the object for each,
# or closes every connection) gets larger pieces, so that asking stays a small part of the time.
PIECE_ASKS = 4
MiB = 1 << 20


class Fetchers(Protocol):
    """What the ramp reads of the fetcher threads."""

    def moved(self) -> int:
        """Bytes read into the file so far, over every connection (exact to one read)."""

    def answered(self, width: int) -> bool:
        """Whether every fetcher below ``width`` still at work has had its answer."""

    def first_reading(self) -> bool:
        """Whether the first answer's fetcher is still at work (it can keep the rest)."""


def widths(most: int) -> list[int]:
    """The steps from one connection to ``most``: doubling, the last one ``most``."""
    steps = [1]
    while steps[-1] < most:
        steps.append(min(2 * steps[-1], most))
    return steps


def next_width(steps: list[int], step: int, rate: float, before: float) -> tuple[int, bool]:
    """After ``steps[step]`` connections moved ``rate`` bytes a second where ``steps[step - 1]``
    moved ``before``: the step to take (its index) and whether that is for good."""
    if rate < SPREAD_GAIN * before:
        return step - 1, True
    if step + 1 >= len(steps):
        return step, True
    return step + 1, False


def asking_costs_more(ask: float, alone: float, left: int, connections: int) -> bool:
    """Whether other requests would cost more than they could save: the first answer alone (``alone``
    bytes a second, ``left`` bytes to go) finishes about as soon as with the ramp's next step, one
    more connection whose request waits ``ask`` seconds for its answer while the first goes on
    (``connections``: the most allowed; 1 allows no other)."""
    if alone <= 0 or ask <= 0 or left <= 0 or connections < 2:
        return False
    after_ask = left - ask * alone  # what is still left when the other's answer comes
    if after_ask <= 0:
        return True
    return SPREAD_GAIN * (ask + after_ask / (2 * alone)) >= left / alone


class Ramp:
    """Adds connections while they gain (see the rules above). ``seconds`` 0: every connection at
    once, for good (nothing to measure: no first answer, or a caller that wants them all)."""

    def __init__(
        self,
        plan: RangePlan,
        fetchers: Fetchers,
        seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan, self.fetchers, self.seconds, self.clock = plan, fetchers, seconds, clock
        self.steps = widths(plan.connections)
        self.step = 0
        self.rates: list[float] = []  # what each step moved a second, the first alone first
        self.start, self.moved = clock(), fetchers.moved()
        self.window = seconds
        # The first answer's window starts with its first bytes (not with the threads' start).
        self.phase = "starting" if seconds > 0 and len(self.steps) > 1 else "settled"
        plan.set_width(1 if self.phase == "starting" else plan.connections, settled=self.phase == "settled")

    def check(self) -> None:
        """Look at what moved; take the next step, go back, or stay (called often, cheap)."""
        plan = self.plan
        if self.phase == "settled":
            return
        if plan.done_bytes >= plan.total:  # the first answer brought it all: nobody waits
            self._settle(self.steps[self.step])
            return
        now, moved = self.clock(), self.fetchers.moved()
        if self.phase == "starting":
            if moved > self.moved:
                self.start, self.moved, self.phase = now, moved, "measuring"
            return
        if self.phase == "answering":  # the window starts once the new connections are answered
            if self.fetchers.answered(self.steps[self.step]):
                self.start, self.moved, self.phase = now, moved, "measuring"
            return
        elapsed = now - self.start
        if elapsed < self.window or (moved - self.moved < MIN_WINDOW_BYTES and elapsed < 4 * self.window):
            return
        rate = (moved - self.moved) / elapsed
        self.rates.append(rate)
        if self.step == 0:
            self._after_alone(rate, now)
            return
        width, before = self.steps[self.step], self.rates[-2]
        log.debug(
            "%s: %d connections moved %.1f MiB/s, %d %.1f MiB/s (the first alone %.1f MiB/s)",
            plan.what,
            width,
            rate / MiB,
            self.steps[self.step - 1],
            before / MiB,
            self.rates[0] / MiB,
        )
        step, settled = next_width(self.steps, self.step, rate, before)
        if step < self.step and step == 0:
            if self.fetchers.first_reading():
                self._to_first(
                    f"{width} connections moved {rate / MiB:.1f} MiB/s, "
                    f"the first alone {self.rates[0] / MiB:.1f} MiB/s"
                )
                self._settle(1)
            else:  # it ended its answer: the others keep going
                self._settle(width)
        elif settled:
            self._settle(self.steps[step])
        else:
            self._widen(step)

    def _after_alone(self, alone: float, now: float) -> None:
        plan = self.plan
        if self._asking_costs_more(alone):
            self._settle(1)
            return
        if plan.cutoff is not None and alone > 0:
            alone_needs = (plan.total - plan.done_bytes) / alone
            if plan.cutoff - now < 1.5 * alone_needs:  # it may expire first: everything asked now
                plan.recut(plan.connections)
                log.debug("%s: its URL may expire first: one region per connection, asked now", plan.what)
                self.steps = [1, plan.connections]
                self._widen(1)
                return
        plan.grow(int(PIECE_ASKS * plan.ask_time * alone))
        self._widen(1)

    def _widen(self, step: int) -> None:
        self.step, self.phase, self.window = step, "answering", STEP_TIME
        self.plan.set_width(self.steps[step])

    def _to_first(self, reason: str, level: int | None = None) -> None:
        """Every missing byte to the first answer, which reads on; a URL that expires gets no
        request more (it reads its one answer through)."""
        plan = self.plan
        plan.go_single(-1, reason, keeper=0, through=plan.cutoff is not None, level=level)

    def _settle(self, width: int) -> None:
        self.phase = "settled"
        self.plan.set_width(width, settled=True)

    def _asking_costs_more(self, alone: float) -> bool:
        """After the first answer's time alone: whether the others' requests would cost more than they
        could save (the first alone finishes sooner than they are answered and help); then the rest
        is the first one's, and no other request is made. True when so decided."""
        plan = self.plan
        ask, left = plan.ask_time, plan.total - plan.done_bytes
        if not (asking_costs_more(ask, alone, left, plan.connections) and self.fetchers.first_reading()):
            return False
        self._to_first(
            f"a request waits {ask:.2f} s for its answer, the first alone moves {alone / MiB:.1f} MiB/s "
            f"and has {left / MiB:.1f} MiB left: other connections would not make it sooner",
            level=logging.DEBUG,
        )
        return True
