"""`OptimizedModule` is called like the model: optimize-time kwargs are defaults, names work,
and another shape gets an error naming the planned shapes (plans are per shape)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fxenergy.api import optimize
from fxenergy.errors import InputShapeError


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, use_cache: bool = True):
        y = self.lin(x)
        if mask is not None:
            y = y * mask
        return (y, y.sum()) if use_cache else y


@pytest.mark.parametrize("method", ["symbolic", "export"])
def test_calling_convention_is_the_models(method: str) -> None:
    torch.manual_seed(0)
    model, x, mask = Gated(), torch.randn(2, 16), torch.rand(2, 16)
    opt = optimize(model, (x,), {"mask": mask, "use_cache": False}, backend="sim", method=method,
                   time_limit_s=2)  # fmt: skip
    want = model(x, mask=mask, use_cache=False)
    torch.testing.assert_close(opt(x, mask=mask), want)  # use_cache given once, at optimize
    torch.testing.assert_close(opt(x=x, mask=mask), want)  # by name
    torch.testing.assert_close(opt(x, mask, False), want)  # positionally
    with pytest.raises(
        InputShapeError, match=r"planned for inputs float32\[2x16\].*got float32\[3x16\]"
    ):
        opt(torch.randn(3, 16), mask=torch.rand(3, 16))
    with pytest.raises(InputShapeError, match=r"use_cache=False.*use_cache=True"):
        opt(x, mask=mask, use_cache=True)
    torch.testing.assert_close(opt(x, mask=mask), want)  # still usable after the errors
