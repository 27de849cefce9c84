"""Retry delays: capped exponential backoff with jitter.

Jitter spreads the retries of jobs that failed together (the remote was down for all of them) so
they do not come back as one burst.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """``delay(n) = min(cap, base * factor ** (n - 1)) * (1 - jitter * U[0, 1))`` seconds.

    ``n`` is the attempt that just failed (1 for the first). The claim query computes the same
    formula in SQL, so the delay after a crashed worker matches the delay after a raised error.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 600.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("backoff base and cap must not be negative")
        if self.factor < 1:
            raise ValueError("backoff factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be between 0 and 1")

    def delay(self, attempt: int) -> float:
        full = min(self.cap, self.base * self.factor ** max(attempt - 1, 0))
        return full * (1.0 - self.jitter * random.random())
