"""The simulator is pure and seeded: its patterns, labels and drifts are checked on what it emits."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import replace

import numpy as np
import pytest

from rtml.simulate.simulator import (
    DriftSwitch,
    Emission,
    LabelEvent,
    SimConfig,
    Simulator,
    Transaction,
    scheduled,
)
from rtml.simulate.world import CATEGORIES, SHIFTED_MIX, mix_weights

RATES = {"card_testing": 0.004, "account_takeover": 0.004, "high_value_new_merchant": 0.006}
CONFIG = SimConfig(
    seed=11,
    rate_per_s=0.4,
    n_cards=500,
    n_merchants=400,
    fraud_rates=RATES,
    chargeback_delay_s=3_600.0,
    legit_label_delay_s=7_200.0,
    legit_label_rate=0.5,
)
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def run() -> tuple[Simulator, list[Emission]]:
    sim = Simulator(CONFIG)
    # Two simulated days; labels of the last hours are still pending and not emitted.
    return sim, list(sim.until(CONFIG.start_ms + 2 * 24 * HOUR_MS))


def transactions(items: list[Emission]) -> list[Transaction]:
    return [i for i in items if isinstance(i, Transaction)]


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    first = [i.event() for i in Simulator(CONFIG).take(3_000)]
    again = [i.event() for i in Simulator(CONFIG).take(3_000)]
    other = [i.event() for i in Simulator(replace(CONFIG, seed=12)).take(3_000)]
    assert first == again
    assert first != other


def test_emissions_are_in_time_order_and_ids_unique(run: tuple[Simulator, list[Emission]]) -> None:
    _, items = run
    stamps = [i.ts for i in items]
    assert stamps == sorted(stamps)
    assert len({i.id for i in items}) == len(items)
    assert all(CONFIG.start_ms <= ts < CONFIG.start_ms + 2 * 24 * HOUR_MS for ts in stamps)


def test_fraud_episodes_come_at_the_configured_rates(run: tuple[Simulator, list[Emission]]) -> None:
    sim, items = run
    episodes: dict[str, set[int]] = defaultdict(set)
    for tx in transactions(items):
        if tx.pattern is not None:
            episodes[tx.pattern].add(tx.episode)  # type: ignore[arg-type]
    assert sim.arrivals > 50_000
    for pattern, rate in RATES.items():
        assert within_binomial(sim.episodes[pattern], sim.arrivals, rate), (pattern, sim.episodes[pattern])
        # Every episode begun was emitted, apart from ones still running at the end.
        assert sim.episodes[pattern] - len(episodes[pattern]) <= 2
    assert sim.episodes["gift_card_cashout"] == 0  # only under the new_pattern drift


def test_fraud_patterns_look_as_declared(run: tuple[Simulator, list[Emission]]) -> None:
    sim, items = run
    cards = {c.id: c for c in sim.world.cards}
    seen: dict[str, set[str]] = defaultdict(set)
    by_episode: dict[tuple[str, int], list[Transaction]] = defaultdict(list)
    for tx in transactions(items):
        card = cards[tx.card]
        if tx.pattern == "card_testing":
            assert tx.amount <= 5.0 and tx.category == "digital" and tx.channel == "online"
            assert tx.device not in card.devices
        elif tx.pattern == "account_takeover":
            assert tx.country != card.country and tx.device not in card.devices
        elif tx.pattern == "high_value_new_merchant":
            of_category = {m.id for m in sim.world.merchants_by_category[tx.category]}
            # A merchant the card never paid, unless it has paid every one of the category.
            assert tx.merchant not in seen[tx.card] or of_category <= seen[tx.card]
            assert tx.device in card.devices and tx.country == card.country
        if tx.pattern is not None:
            by_episode[(tx.pattern, tx.episode)].append(tx)  # type: ignore[index]
        seen[tx.card].add(tx.merchant)
    bursts = [txs for (pattern, _), txs in by_episode.items() if pattern == "card_testing"]
    assert all(4 <= len(txs) <= 20 and len({t.card for t in txs}) == 1 for txs in bursts)
    # A burst is quick: median span of a few minutes at most.
    assert np.median([txs[-1].ts - txs[0].ts for txs in bursts]) < 10 * 60_000
    legit = [tx.amount for tx in transactions(items) if not tx.fraud]
    high = [tx.amount for tx in transactions(items) if tx.pattern == "high_value_new_merchant"]
    assert np.median(high) > 10 * np.median(legit)


def test_labels_follow_their_transactions_after_the_declared_delays(run: tuple[Simulator, list[Emission]]) -> None:
    _, items = run
    txs = {tx.id: tx for tx in transactions(items)}
    labels = [i for i in items if isinstance(i, LabelEvent)]
    fraud_delays: list[float] = []
    legit_delays: list[float] = []
    for label in labels:
        tx = txs[label.target]
        assert label.label == int(tx.fraud) and label.card == tx.card and label.target_ts == tx.ts
        (fraud_delays if tx.fraud else legit_delays).append((label.ts - tx.ts) / 1000)
        assert label.event()["data"] == {"id": tx.id, "label": label.label, "ts": label.ts}
    # Chargebacks: log-normal around the median; confirmations: the fixed delay +-10%.
    assert abs(np.median(fraud_delays) / CONFIG.chargeback_delay_s - 1) < 0.15
    assert min(legit_delays) >= 0.9 * CONFIG.legit_label_delay_s - 1
    assert max(legit_delays) <= 1.1 * CONFIG.legit_label_delay_s + 1
    # Label rates: transactions old enough to be fully labelled.
    cutoff = items[-1].ts - 1.2 * CONFIG.legit_label_delay_s * 1000
    old_legit = [tx for tx in txs.values() if not tx.fraud and tx.ts < cutoff]
    labelled = {label.target for label in labels}
    hits = sum(tx.id in labelled for tx in old_legit)
    assert within_binomial(hits, len(old_legit), CONFIG.legit_label_rate)


def test_daily_cycle_peaks_in_the_afternoon(run: tuple[Simulator, list[Emission]]) -> None:
    _, items = run
    hours = Counter(((tx.ts % (24 * HOUR_MS)) // HOUR_MS) for tx in transactions(items) if not tx.fraud)
    afternoon = sum(hours[h] for h in (12, 13, 14, 15, 16))
    night = sum(hours[h] for h in (0, 1, 2, 3, 4))
    # Intensity 1 + 0.6 cos(2 pi (h - 14)/24): the ratio of these windows is about 3.1.
    assert 2.5 < afternoon / night < 3.8


def _legit_log_amounts(items: list[Emission], category: str) -> np.ndarray:
    return np.log([tx.amount for tx in transactions(items) if not tx.fraud and tx.category == category])


def test_amount_shift_moves_every_category_by_the_factor() -> None:
    sim = Simulator(CONFIG)
    before = sim.take(8_000)
    sim.set_drift("amount_shift")
    after = sim.take(8_000)
    for category in ("grocery", "retail", "digital"):
        shift = _legit_log_amounts(after, category).mean() - _legit_log_amounts(before, category).mean()
        assert abs(shift - math.log(CONFIG.amount_shift_factor)) < 0.1, category
    sim.set_drift("amount_shift", False)
    back = sim.take(8_000)
    assert abs(_legit_log_amounts(back, "grocery").mean() - _legit_log_amounts(before, "grocery").mean()) < 0.1


def test_category_mix_change_follows_the_shifted_mix() -> None:
    sim = Simulator(CONFIG)
    sim.take(2_000)
    sim.set_drift("category_mix")
    after = [tx for tx in transactions(sim.take(16_000)) if not tx.fraud]
    counts = Counter(tx.category for tx in after)
    expected = mix_weights(SHIFTED_MIX)
    baseline = mix_weights(None)
    for i, category in enumerate(c.name for c in CATEGORIES):
        share = counts[category] / len(after)
        assert abs(share - expected[i]) < 0.015, category
    assert abs(counts["digital"] / len(after) - baseline[[c.name for c in CATEGORIES].index("digital")]) > 0.05


def test_new_pattern_appears_only_while_switched_on() -> None:
    config = replace(CONFIG, new_pattern_rate=0.01)
    switch_at = 6 * 3_600.0
    sim = Simulator(config)
    items = list(
        scheduled_until(sim, [DriftSwitch("new_pattern", switch_at)], config.start_ms + int(2 * switch_at * 1000))
    )
    cashouts = [tx for tx in transactions(items) if tx.pattern == "gift_card_cashout"]
    assert cashouts and min(tx.ts for tx in cashouts) >= config.start_ms + switch_at * 1000
    assert all(tx.category == "gift_cards" and 150 <= tx.amount <= 500 for tx in cashouts)
    assert sim.episodes["gift_card_cashout"] > 0


def scheduled_until(sim: Simulator, switches: list[DriftSwitch], end_ms: int) -> list[Emission]:
    out: list[Emission] = []
    for item in scheduled(sim, switches):
        if item.ts >= end_ms:
            break
        out.append(item)
    return out


def test_bad_configuration_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="unknown fraud pattern"):
        SimConfig(fraud_rates={"bank_robbery": 0.1})
    with pytest.raises(ValueError, match="rate_per_s"):
        SimConfig(rate_per_s=0)
    with pytest.raises(ValueError, match="unknown drift scenario"):
        Simulator(CONFIG).set_drift("weather")
    with pytest.raises(ValueError, match="simulated seconds"):
        DriftSwitch.parse("amount_shift@soon")
