"""torch.distributed.pipelining integration: per-rank frequency plans."""
