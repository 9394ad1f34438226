"""The transaction simulator: a seeded generator of card traffic with fraud, labels and drift, and its publisher."""
