"""Per-op FLOP and byte formulas and the roofline: the only place cost math lives."""
