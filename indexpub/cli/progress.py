"""Progress of a long command (verify, repair, rebuild) on stderr: a bar on a terminal, a plain
line every few seconds otherwise (a log file, a CI job, a pipe), so that stdout keeps only the
command's answer."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO

import click

# Seconds between two plain lines when stderr is not a terminal.
LINE_EVERY = 5.0


class Progress:
    """``start(total)``, then ``update(done)`` as often as you like, then ``finish()`` (or use
    it as a context manager). Work whose total is not known yet shows nothing."""

    def __init__(
        self,
        label: str,
        *,
        unit: str = "crates",
        stream: TextIO | None = None,
        line_every: float = LINE_EVERY,
    ) -> None:
        self.label = label
        self.unit = unit
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty()
        self.line_every = line_every
        self.total: int | None = None
        self.done = 0
        self._started = time.monotonic()
        self._last_line = 0.0
        self._bar: Any = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.finish(completed=kind is None)

    def start(self, total: int) -> None:
        self.total = total
        self._started = time.monotonic()
        if self.terminal:
            self._bar = click.progressbar(
                length=max(total, 1),
                label=self.label,
                file=self.stream,
                show_eta=False,  # its own estimate lags; _rate's is from the whole run
                show_percent=True,
                show_pos=True,
                item_show_func=lambda _: self._rate(),
                width=30,
            )
            self._bar.__enter__()
        else:
            self._line(f"{self.label}: {total:,} {self.unit}")

    def update(self, done: int) -> None:
        if self.total is None or done <= self.done:
            return
        step, self.done = done - self.done, done
        if self._bar is not None:
            self._bar.update(step)
        elif time.monotonic() - self._last_line >= self.line_every:
            self._line(self._summary())

    def finish(self, *, completed: bool = True) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.__exit__(None, None, None)
        elif completed and self.total is not None:
            self._line(self._summary(final=True))

    def _line(self, text: str) -> None:
        self._last_line = time.monotonic()
        click.echo(text, file=self.stream)

    def _rate(self) -> str:
        """The rate so far, and the time left at that rate."""
        elapsed = time.monotonic() - self._started
        if elapsed <= 0 or not self.done:
            return ""
        rate = self.done / elapsed
        left = max(0, (self.total or 0) - self.done) / rate
        return f"{rate:,.0f} {self.unit}/s, {_clock(left)} left"

    def _summary(self, *, final: bool = False) -> str:
        total = self.total or 0
        elapsed = time.monotonic() - self._started
        text = f"{self.label}: {self.done:,} of {total:,} {self.unit}"
        if total:
            text += f" ({100 * self.done // total}%)"
        if self.done and elapsed > 0:
            rate = self.done / elapsed
            text += f", {rate:,.0f} {self.unit}/s"
            if final:
                text += f", {elapsed:.1f} s"
            elif total > self.done:
                text += f", {_clock((total - self.done) / rate)} left"
        return text


def _clock(seconds: float) -> str:
    """A duration as a clock: 0:07, 2:31, 1:02:31."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
