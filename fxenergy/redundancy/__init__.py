"""fxenergy.redundancy."""
