"""fxenergy.graph."""
