"""Synthetic card payments for the demo, and the ground truth of which are fraud.

Payments arrive at a steady rate from 500 cards; amounts are log-normal around 20 (times ``level``).
A payment is fraud with a probability that grows with its amount relative to the going level, and is
higher in one country. When the level moves (the demo's shift: prices triple), a model that learnt
the old level sees fraud everywhere: it has to be retrained.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

CARDS = 500
COUNTRIES = ["DE", "FR", "NL", "US"]


@dataclass(frozen=True)
class Payment:
    card_id: int
    amount: float
    country: str
    event_time: datetime

    def event(self) -> dict[str, Any]:
        """The transaction message the stream worker aggregates."""
        return {
            "card_id": self.card_id,
            "amount": self.amount,
            "merchant": f"m{self.card_id % 200}",
            "country": self.country,
            "event_time": self.event_time.isoformat(),
        }


class Traffic:
    def __init__(self, *, seed: int) -> None:
        self.rng = random.Random(seed)
        self.level = 1.0
        """The going price level; the shift triples it."""

    def payment(self, when: datetime) -> Payment:
        return Payment(
            card_id=self.rng.randrange(CARDS),
            amount=round(self.rng.lognormvariate(math.log(20 * self.level), 0.8), 2),
            country=self.rng.choices(COUNTRIES, weights=[4, 3, 2, 1])[0],
            event_time=when,
        )

    def between(self, start: datetime, end: datetime, *, per_second: float) -> list[Payment]:
        count = int((end - start).total_seconds() * per_second)
        step = (end - start) / max(count, 1)
        return [self.payment(start + step * index) for index in range(count)]

    def is_fraud(self, payment: Payment) -> int:
        """The truth: large for the going level, and more often in the US."""
        relative = math.log(payment.amount / (20 * self.level))
        logit = -3.0 + 1.8 * relative + (0.9 if payment.country == "US" else 0.0)
        return int(self.rng.random() < 1.0 / (1.0 + math.exp(-logit)))


def window_start(moment: datetime, seconds: int) -> datetime:
    """The start of the ``seconds``-long tumbling window that holds ``moment``."""
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, moment.tzinfo) + timedelta(0)
