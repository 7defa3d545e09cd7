"""Built-in models for reports, examples and tests (no extra packages needed)."""
