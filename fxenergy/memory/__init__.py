"""fxenergy.memory."""
