"""The simulated world: merchant categories, cards, merchants and devices.

Everything is drawn from one seeded :class:`numpy.random.Generator`, so a seed
gives the same world on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Category:
    """A merchant category: amounts are log-normal, ``exp(N(log(median), sigma))``.

    ``weight`` is the category's share of legitimate transactions and ``online``
    the share of its transactions made card-not-present.
    """

    name: str
    median: float
    sigma: float
    weight: float
    online: float

    @property
    def mu(self) -> float:
        return math.log(self.median)


CATEGORIES: tuple[Category, ...] = (
    Category("grocery", median=32.0, sigma=0.6, weight=0.24, online=0.05),
    Category("restaurants", median=28.0, sigma=0.6, weight=0.15, online=0.10),
    Category("fuel", median=55.0, sigma=0.35, weight=0.10, online=0.0),
    Category("pharmacy", median=18.0, sigma=0.6, weight=0.08, online=0.10),
    Category("retail", median=60.0, sigma=0.8, weight=0.15, online=0.40),
    Category("digital", median=11.0, sigma=0.8, weight=0.12, online=1.0),
    Category("electronics", median=240.0, sigma=0.9, weight=0.06, online=0.50),
    Category("travel", median=380.0, sigma=0.8, weight=0.05, online=0.80),
    Category("gift_cards", median=50.0, sigma=0.5, weight=0.03, online=0.60),
    Category("jewelry", median=450.0, sigma=0.9, weight=0.02, online=0.30),
)
CATEGORY_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(CATEGORIES)}

# The merchant-category mix change: card-not-present spending surges (a sale
# season), card-present categories shrink.
SHIFTED_MIX: dict[str, float] = {
    "grocery": 0.12,
    "restaurants": 0.08,
    "fuel": 0.05,
    "pharmacy": 0.05,
    "retail": 0.20,
    "digital": 0.22,
    "electronics": 0.16,
    "travel": 0.04,
    "gift_cards": 0.06,
    "jewelry": 0.02,
}

COUNTRIES: tuple[str, ...] = ("DE", "FR", "NL", "ES", "IT", "GB", "US", "PL", "SE", "PT")
COUNTRY_WEIGHTS: tuple[float, ...] = (0.25, 0.18, 0.1, 0.1, 0.1, 0.09, 0.06, 0.05, 0.04, 0.03)


def mix_weights(mix: dict[str, float] | None) -> np.ndarray:
    """Normalized category probabilities, in :data:`CATEGORIES` order.

    >>> mix_weights(None).sum().round(6)
    np.float64(1.0)
    >>> mix_weights({"fuel": 1.0})[CATEGORY_INDEX["fuel"]]
    np.float64(1.0)
    """
    raw = np.array([c.weight if mix is None else mix.get(c.name, 0.0) for c in CATEGORIES], dtype=float)
    if raw.sum() <= 0:
        raise ValueError("a category mix needs at least one positive weight")
    weights: np.ndarray = raw / raw.sum()
    return weights


@dataclass(slots=True)
class Card:
    """A card holder: home country, usual devices, spending level and the merchants seen so far."""

    id: str
    country: str
    devices: list[str]
    spend: float
    seen_merchants: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    category: str
    country: str


@dataclass(slots=True)
class World:
    cards: list[Card]
    merchants_by_category: dict[str, list[Merchant]]
    fraud_devices: int = 0

    @classmethod
    def build(cls, rng: np.random.Generator, *, n_cards: int, n_merchants: int) -> World:
        if n_cards < 1 or n_merchants < len(CATEGORIES):
            raise ValueError(f"need at least 1 card and {len(CATEGORIES)} merchants (one per category)")
        country_p = np.array(COUNTRY_WEIGHTS) / sum(COUNTRY_WEIGHTS)
        cards: list[Card] = []
        device_seq = 0
        for i in range(n_cards):
            n_devices = 1 + int(rng.random() < 0.4)
            devices = [f"dev-{device_seq + k:07d}" for k in range(n_devices)]
            device_seq += n_devices
            country = str(COUNTRIES[rng.choice(len(COUNTRIES), p=country_p)])
            cards.append(Card(f"card-{i:06d}", country, devices, float(rng.lognormal(0.0, 0.3))))
        merchants: dict[str, list[Merchant]] = {c.name: [] for c in CATEGORIES}
        category_p = mix_weights(None)
        for i in range(n_merchants):
            # Every category gets at least one merchant; the rest follow the spending mix.
            index = i if i < len(CATEGORIES) else int(rng.choice(len(CATEGORIES), p=category_p))
            name = CATEGORIES[index].name
            country = str(COUNTRIES[rng.choice(len(COUNTRIES), p=country_p)])
            merchants[name].append(Merchant(f"m-{i:05d}", name, country))
        return cls(cards, merchants)

    def new_fraud_device(self) -> str:
        self.fraud_devices += 1
        return f"dev-x{self.fraud_devices:06d}"
