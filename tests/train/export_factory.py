"""A point-in-time export built from simulated traffic with brute-force features, for the training tests.

Each row's features use only the card's transactions at or before the row's
time, the way the feature store's export does.
"""

from __future__ import annotations

from collections import defaultdict, deque
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rtml.simulate.simulator import SimConfig, Simulator, Transaction

HOUR_MS = 3_600_000
FEATURES = (
    "amount",
    "card_velocity.txn_count_1h",
    "card_amount.amount_mean_24h",
    "card_diversity.countries_24h",
    "device_new",
    "merchant_new",
)


def export_table(
    *, seed: int = 1, hours: float = 24.0, rate_per_s: float = 0.3, unlabelled_every: int = 50
) -> pa.Table:
    config = SimConfig(
        seed=seed,
        rate_per_s=rate_per_s,
        n_cards=400,
        n_merchants=300,
        fraud_rates={"card_testing": 0.004, "account_takeover": 0.006, "high_value_new_merchant": 0.008},
    )
    sim = Simulator(config)
    end = config.start_ms + int(hours * HOUR_MS)
    history: dict[str, deque[Transaction]] = defaultdict(deque)
    devices: dict[str, set[str]] = defaultdict(set)
    merchants: dict[str, set[str]] = defaultdict(set)
    rows: dict[str, list[object]] = {name: [] for name in ("event_id", "event_ts", "entity", "label", *FEATURES)}
    for n, tx in enumerate(e for e in sim.until(end) if isinstance(e, Transaction)):
        past = history[tx.card]
        past.append(tx)
        while past[0].ts <= tx.ts - 24 * HOUR_MS:
            past.popleft()
        last_hour = [p for p in past if p.ts > tx.ts - HOUR_MS]
        rows["event_id"].append(tx.id)
        rows["event_ts"].append(tx.ts)
        rows["entity"].append(tx.card)
        # A few rows have no label yet: the export leaves it empty and training skips them.
        rows["label"].append(None if n % unlabelled_every == unlabelled_every - 1 else int(tx.fraud))
        rows["amount"].append(tx.amount)
        rows["card_velocity.txn_count_1h"].append(len(last_hour))
        rows["card_amount.amount_mean_24h"].append(float(np.mean([p.amount for p in past])))
        rows["card_diversity.countries_24h"].append(len({p.country for p in past}))
        rows["device_new"].append(tx.device not in devices[tx.card])
        rows["merchant_new"].append(tx.merchant not in merchants[tx.card])
        devices[tx.card].add(tx.device)
        merchants[tx.card].add(tx.merchant)
    return pa.table(rows)


def write(table: pa.Table, path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)
    return path
