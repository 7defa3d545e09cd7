"""Frequency runtime: backends (NVML, simulated, null), the switching controller, measurement."""
