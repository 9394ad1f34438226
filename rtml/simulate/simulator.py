"""A seeded, pure generator of card transactions, fraud episodes and delayed labels.

Notes
-----
Legitimate arrivals follow a non-homogeneous Poisson process with intensity
``rate * cycle(t)``, ``cycle(t) = 1 + A cos(2 pi (h(t) - 14) / 24)`` (a peak at
14:00 UTC, a trough at 02:00), drawn by thinning: candidates come at rate
``rate * (1 + A)`` and each is kept with probability ``cycle(t) / (1 + A)``.

Each arrival, with probability ``rate_p`` for fraud pattern ``p``, becomes the start
of a fraud episode of that pattern instead of a legitimate purchase, so
``episodes_p / arrivals`` estimates ``rate_p``:

- ``card_testing``: a burst of 4-20 tiny card-not-present amounts at digital merchants,
  from a device the card never used, seconds apart;
- ``account_takeover``: 1-4 purchases from a new device in a country other than the
  card's home, minutes apart, at higher than usual amounts;
- ``high_value_new_merchant``: one purchase 4-10 times the category's usual amount at a
  merchant the card has never paid;
- ``gift_card_cashout`` (off unless the ``new_pattern`` drift is on): 3-6 gift-card
  purchases of 150-500 from the card's own device and country, tens of minutes apart,
  a pattern a model trained before it never saw.

Every fraudulent transaction gets a chargeback (label 1) with probability
``chargeback_rate``, after a log-normal delay with median ``chargeback_delay_s``;
legitimate ones get label 0 with probability ``legit_label_rate`` after
``legit_label_delay_s`` (+-10%). Labels and transactions come out in one stream
ordered by time.

Drift scenarios switch on and off while running (:meth:`Simulator.set_drift`) and
act from the next arrival: ``amount_shift`` multiplies every amount by
``amount_shift_factor``, ``new_pattern`` turns on ``gift_card_cashout``,
``category_mix`` replaces the category mix with :data:`~rtml.simulate.world.SHIFTED_MIX`.

Examples
--------
>>> sim = Simulator(SimConfig(seed=7, n_cards=50, n_merchants=40))
>>> first = [e for e in sim.take(200) if isinstance(e, Transaction)][0]
>>> first.event()["type"], first.event()["entity"].startswith("card-")
('transaction', True)
>>> [e.id for e in Simulator(SimConfig(seed=7, n_cards=50, n_merchants=40)).take(3)] == [
...     e.id for e in Simulator(SimConfig(seed=7, n_cards=50, n_merchants=40)).take(3)]
True
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtml.simulate.world import CATEGORIES, CATEGORY_INDEX, COUNTRIES, SHIFTED_MIX, Card, World, mix_weights

PATTERNS: tuple[str, ...] = ("card_testing", "account_takeover", "high_value_new_merchant", "gift_card_cashout")
DRIFTS: tuple[str, ...] = ("amount_shift", "new_pattern", "category_mix")
DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What the simulation draws from; every time is in simulated seconds."""

    seed: int = 42
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    rate_per_s: float = 10.0
    daily_amplitude: float = 0.6
    n_cards: int = 2_000
    n_merchants: int = 300
    fraud_rates: dict[str, float] = field(
        default_factory=lambda: {"card_testing": 0.002, "account_takeover": 0.002, "high_value_new_merchant": 0.003}
    )
    new_pattern_rate: float = 0.004
    amount_shift_factor: float = 1.8
    chargeback_rate: float = 0.95
    chargeback_delay_s: float = 2 * 86_400.0
    chargeback_delay_sigma: float = 0.5
    legit_label_rate: float = 1.0
    legit_label_delay_s: float = 3 * 86_400.0
    id_prefix: str = ""

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or not math.isfinite(self.rate_per_s):
            raise ValueError(f"rate_per_s must be positive, got {self.rate_per_s}")
        if not 0 <= self.daily_amplitude < 1:
            raise ValueError(f"daily_amplitude must be within [0, 1), got {self.daily_amplitude}")
        for name, rate in self.fraud_rates.items():
            if name not in PATTERNS:
                raise ValueError(f"unknown fraud pattern {name!r}; known: {', '.join(PATTERNS)}")
            if rate < 0:
                raise ValueError(f"fraud rate for {name} must be >= 0")
        if sum(self.fraud_rates.values()) + self.new_pattern_rate >= 0.5:
            raise ValueError("fraud rates must add up to well under 0.5 of arrivals")
        for name in ("chargeback_rate", "legit_label_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.chargeback_delay_s < 0 or self.legit_label_delay_s < 0 or self.amount_shift_factor <= 0:
            raise ValueError("delays must be >= 0 and amount_shift_factor > 0")

    @property
    def prefix(self) -> str:
        return self.id_prefix or f"s{self.seed}"


@dataclass(frozen=True, slots=True)
class Transaction:
    """One card transaction; ``pattern`` and ``episode`` are the ground truth, never on the wire."""

    id: str
    ts: int
    card: str
    merchant: str
    category: str
    amount: float
    country: str
    device: str
    channel: str
    pattern: str | None = None
    episode: int | None = None

    @property
    def fraud(self) -> bool:
        return self.pattern is not None

    def event(self) -> dict[str, Any]:
        """The raw event of the contract: ``{"id", "type", "entity", "ts", "data"}``."""
        return {
            "id": self.id,
            "type": "transaction",
            "entity": self.card,
            "ts": self.ts,
            "data": {
                "amount": self.amount,
                "currency": "EUR",
                "merchant": self.merchant,
                "category": self.category,
                "country": self.country,
                "device": self.device,
                "channel": self.channel,
            },
        }


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """A label (chargeback or confirmation) for transaction ``target``, known at ``ts``."""

    id: str
    ts: int
    card: str
    target: str
    label: int
    target_ts: int

    def event(self) -> dict[str, Any]:
        """A raw ``label`` event; its data is the Label message's ``{"id": target, "label", "ts"}``."""
        return {
            "id": self.id,
            "type": "label",
            "entity": self.card,
            "ts": self.ts,
            "data": {"id": self.target, "label": self.label, "ts": self.ts},
        }


Emission = Transaction | LabelEvent


@dataclass(slots=True)
class Drift:
    amount_shift: bool = False
    new_pattern: bool = False
    category_mix: bool = False


class Simulator:
    """The generator: iterate it (or :meth:`take`, :meth:`until`) for emissions in time order."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._rng = np.random.default_rng(config.seed)
        self.world = World.build(self._rng, n_cards=config.n_cards, n_merchants=config.n_merchants)
        self.drift = Drift()
        self._mix = mix_weights(None)
        self._heap: list[tuple[int, int, Emission]] = []
        self._seq = 0
        self._labels = 0
        self._next_arrival_ms = float(config.start_ms)
        self.arrivals = 0
        self.episodes: dict[str, int] = dict.fromkeys(PATTERNS, 0)

    # -- drift -----------------------------------------------------------------------------
    def set_drift(self, scenario: str, enabled: bool = True) -> None:
        """Switch a drift scenario on or off; it acts from the next arrival."""
        if scenario not in DRIFTS:
            raise ValueError(f"unknown drift scenario {scenario!r}; known: {', '.join(DRIFTS)}")
        setattr(self.drift, scenario, enabled)
        self._mix = mix_weights(SHIFTED_MIX if self.drift.category_mix else None)

    # -- iteration ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Emission]:
        return self

    def __next__(self) -> Emission:
        # Episodes and labels are only ever scheduled at or after the arrival that made them,
        # so everything queued before the next arrival is final and can go out in order.
        while not self._heap or self._heap[0][0] > self._next_arrival_ms:
            self._arrive()
        return heapq.heappop(self._heap)[2]

    def take(self, n: int) -> list[Emission]:
        return [next(self) for _ in range(n)]

    def until(self, end_ms: int) -> Iterator[Emission]:
        """Emissions with ``ts < end_ms``; the simulator can go on from there afterwards."""
        while True:
            while not self._heap or self._heap[0][0] > self._next_arrival_ms:
                if self._next_arrival_ms >= end_ms and (not self._heap or self._heap[0][0] >= end_ms):
                    return
                self._arrive()
            if self._heap[0][0] >= end_ms:
                return
            yield heapq.heappop(self._heap)[2]

    # -- generation --------------------------------------------------------------------------
    def cycle(self, ts_ms: float) -> float:
        hour = (ts_ms % DAY_MS) / HOUR_MS
        return 1.0 + self.config.daily_amplitude * math.cos(2 * math.pi * (hour - 14.0) / 24.0)

    def _push(self, item: Emission) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (item.ts, self._seq, item))

    def _arrive(self) -> None:
        """Draw the next legitimate arrival time by thinning and turn it into emissions."""
        cfg, rng = self.config, self._rng
        peak = cfg.rate_per_s * (1.0 + cfg.daily_amplitude)
        while True:
            self._next_arrival_ms += rng.exponential(1000.0 / peak)
            if rng.random() * (1.0 + cfg.daily_amplitude) <= self.cycle(self._next_arrival_ms):
                break
        ts = int(self._next_arrival_ms)
        self.arrivals += 1
        card = self.world.cards[int(rng.integers(len(self.world.cards)))]
        rates = dict(cfg.fraud_rates)
        rates["gift_card_cashout"] = cfg.new_pattern_rate if self.drift.new_pattern else 0.0
        u = rng.random()
        for pattern in PATTERNS:
            rate = rates.get(pattern, 0.0)
            if u < rate:
                self.episodes[pattern] += 1
                for tx in getattr(self, f"_{pattern}")(card, ts, self.episodes[pattern]):
                    self._emit(tx)
                return
            u -= rate
        self._emit(self._legit(card, ts))

    def _emit(self, tx: Transaction) -> None:
        cfg, rng = self.config, self._rng
        self.world.cards[int(tx.card[5:])].seen_merchants.add(tx.merchant)
        self._push(tx)
        if tx.fraud:
            if rng.random() < cfg.chargeback_rate:
                delay_s = cfg.chargeback_delay_s * math.exp(cfg.chargeback_delay_sigma * rng.standard_normal())
                self._label(tx, 1, delay_s)
        elif rng.random() < cfg.legit_label_rate:
            self._label(tx, 0, cfg.legit_label_delay_s * rng.uniform(0.9, 1.1))

    def _label(self, tx: Transaction, label: int, delay_s: float) -> None:
        self._labels += 1
        ts = tx.ts + max(1, int(delay_s * 1000))
        self._push(LabelEvent(f"{self.config.prefix}-lb-{self._labels:09d}", ts, tx.card, tx.id, label, tx.ts))

    def _amount(self, category: str, scale: float = 1.0) -> float:
        spec = CATEGORIES[CATEGORY_INDEX[category]]
        amount = self._rng.lognormal(spec.mu, spec.sigma) * scale
        if self.drift.amount_shift:
            amount *= self.config.amount_shift_factor
        return round(max(amount, 0.01), 2)

    def _tx(
        self,
        card: Card,
        ts: int,
        *,
        category: str,
        amount: float,
        merchant: str,
        country: str,
        device: str,
        pattern: str | None = None,
        episode: int | None = None,
    ) -> Transaction:
        self._seq += 1
        online = self._rng.random() < CATEGORIES[CATEGORY_INDEX[category]].online
        return Transaction(
            id=f"{self.config.prefix}-tx-{self._seq:010d}",
            ts=ts,
            card=card.id,
            merchant=merchant,
            category=category,
            amount=amount,
            country=country,
            device=device,
            channel="online" if online else "pos",
            pattern=pattern,
            episode=episode,
        )

    def _merchant(self, category: str, card: Card, *, unseen: bool = False) -> str:
        merchants = self.world.merchants_by_category[category]
        candidates = [m for m in merchants if m.id not in card.seen_merchants] if unseen else merchants
        pool = candidates or merchants
        return pool[int(self._rng.integers(len(pool)))].id

    def _legit(self, card: Card, ts: int) -> Transaction:
        rng = self._rng
        category = CATEGORIES[int(rng.choice(len(CATEGORIES), p=self._mix))].name
        device = card.devices[int(rng.integers(len(card.devices)))]
        # Mostly at home; now and then abroad (travel), which is not fraud.
        country = card.country if rng.random() < 0.97 else str(COUNTRIES[int(rng.integers(len(COUNTRIES)))])
        return self._tx(
            card,
            ts,
            category=category,
            amount=self._amount(category, card.spend),
            merchant=self._merchant(category, card),
            country=country,
            device=device,
        )

    def _card_testing(self, card: Card, ts: int, episode: int) -> list[Transaction]:
        rng = self._rng
        n = 4 + min(16, int(rng.poisson(6)))
        device = self.world.new_fraud_device()
        country = str(COUNTRIES[int(rng.integers(len(COUNTRIES)))])
        merchants = [self._merchant("digital", card, unseen=True) for _ in range(1 + int(rng.random() < 0.5))]
        out, t = [], float(ts)
        for _ in range(n):
            out.append(
                self._tx(
                    card,
                    int(t),
                    category="digital",
                    amount=round(float(rng.uniform(0.5, 5.0)), 2),
                    merchant=merchants[int(rng.integers(len(merchants)))],
                    country=country,
                    device=device,
                    pattern="card_testing",
                    episode=episode,
                )
            )
            t += rng.exponential(20_000.0)
        return out

    def _account_takeover(self, card: Card, ts: int, episode: int) -> list[Transaction]:
        rng = self._rng
        device = self.world.new_fraud_device()
        abroad = [c for c in COUNTRIES if c != card.country]
        country = abroad[int(rng.integers(len(abroad)))]
        out, t = [], float(ts)
        for _ in range(1 + int(rng.integers(4))):
            category = ("electronics", "retail", "travel")[int(rng.integers(3))]
            out.append(
                self._tx(
                    card,
                    int(t),
                    category=category,
                    amount=self._amount(category, 2.0),
                    merchant=self._merchant(category, card),
                    country=country,
                    device=device,
                    pattern="account_takeover",
                    episode=episode,
                )
            )
            t += rng.exponential(600_000.0)
        return out

    def _high_value_new_merchant(self, card: Card, ts: int, episode: int) -> list[Transaction]:
        rng = self._rng
        category = ("electronics", "jewelry", "travel")[int(rng.integers(3))]
        return [
            self._tx(
                card,
                ts,
                category=category,
                amount=self._amount(category, float(rng.uniform(4.0, 10.0))),
                merchant=self._merchant(category, card, unseen=True),
                country=card.country,
                device=card.devices[0],
                pattern="high_value_new_merchant",
                episode=episode,
            )
        ]

    def _gift_card_cashout(self, card: Card, ts: int, episode: int) -> list[Transaction]:
        rng = self._rng
        out, t = [], float(ts)
        for _ in range(3 + int(rng.integers(4))):
            amount = float(rng.uniform(150.0, 500.0))
            if self.drift.amount_shift:
                amount *= self.config.amount_shift_factor
            out.append(
                self._tx(
                    card,
                    int(t),
                    category="gift_cards",
                    amount=round(amount, 2),
                    merchant=self._merchant("gift_cards", card),
                    country=card.country,
                    device=card.devices[0],
                    pattern="gift_card_cashout",
                    episode=episode,
                )
            )
            t += rng.exponential(1_800_000.0)
        return out


@dataclass(frozen=True, slots=True)
class DriftSwitch:
    """Switch ``scenario`` on (or off) once simulated time reaches ``after_s`` past the start.

    >>> DriftSwitch.parse("amount_shift@3600")
    DriftSwitch(scenario='amount_shift', after_s=3600.0, enabled=True)
    >>> DriftSwitch.parse("-new_pattern@60").enabled
    False
    """

    scenario: str
    after_s: float
    enabled: bool = True

    @classmethod
    def parse(cls, text: str) -> DriftSwitch:
        enabled = not text.startswith("-")
        scenario, sep, after = text.lstrip("-").partition("@")
        if scenario not in DRIFTS:
            raise ValueError(f"unknown drift scenario {scenario!r} in {text!r}; known: {', '.join(DRIFTS)}")
        try:
            after_s = float(after) if sep else 0.0
        except ValueError as error:
            raise ValueError(f"{text!r}: the time after '@' must be simulated seconds") from error
        return cls(scenario, after_s, enabled)


def scheduled(sim: Simulator, switches: list[DriftSwitch]) -> Iterator[Emission]:
    """The simulator's emissions, with each switch applied before the first emission at or past its time."""
    todo = sorted(switches, key=lambda s: s.after_s)
    start = sim.config.start_ms
    for item in sim:
        while todo and item.ts >= start + todo[0].after_s * 1000:
            switch = todo.pop(0)
            sim.set_drift(switch.scenario, switch.enabled)
        yield item
