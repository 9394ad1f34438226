"""``rtml demo``: the whole platform on one machine, on a simulated card-fraud stream."""
