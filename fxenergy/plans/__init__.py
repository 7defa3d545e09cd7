"""fxenergy.plans."""
