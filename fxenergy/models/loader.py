"""Resolve the CLI's MODEL argument into an ``nn.Module``.

MODEL is one of:

* a built-in name (``fxenergy models`` lists them): ``gpt-tiny``;
* ``pkg.module:attr``: an importable module and a (dotted) attribute in it;
* ``path/to/file.py:attr``: a Python file and an attribute in it.

The attribute may be an ``nn.Module`` instance (moved to the device), an ``nn.Module`` subclass
(constructed with no arguments) or a factory function taking no arguments and returning a module;
classes and factories run under ``torch.device(device)`` so ``--device meta`` allocates nothing.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxenergy.errors import ModelLoadError
from fxenergy.models import ModelSpec, get_model, list_models


@dataclass
class LoadedModel:
    """A model ready to capture, with the built-in's example inputs if it has them."""

    module: nn.Module
    name: str
    spec: ModelSpec | None = None  #: set for built-in models (their default inputs)
    device: str = "cpu"


def load_model(text: str, device: str | None = None) -> LoadedModel:
    """Build the model that ``text`` names, in eval mode, on ``device``.

    Args:
        text: a built-in name, ``pkg.module:attr`` or ``path/to/file.py:attr``.
        device: where to build it (default: the built-in's default device, else ``cpu``).

    Raises:
        ModelLoadError: the name, module, file or attribute cannot be found or is not a model.
    """
    if ":" not in text:
        spec = get_model(text) if _is_builtin(text) else None
        if spec is None:
            names = ", ".join(s.name for s in list_models())
            raise ModelLoadError(
                f"MODEL {text!r} is not a built-in model ({names}) and has no ':attr' part; "
                "write pkg.module:attr or path/to/file.py:attr"
            )
        dev = device or spec.default_device
        return LoadedModel(spec.build(dev), spec.name, spec, dev)
    where, attr = text.rsplit(":", 1)
    obj = _resolve(_import(where), attr, text)
    dev = device or "cpu"
    return LoadedModel(_instantiate(obj, dev, text).eval(), text, None, dev)


def _is_builtin(name: str) -> bool:
    return name in {s.name for s in list_models(include_unavailable=True)}


def _import(where: str) -> Any:
    if where.endswith(".py") or "/" in where or "\\" in where:
        return _import_file(Path(where))
    try:
        return importlib.import_module(where)
    except ImportError as err:
        raise ModelLoadError(
            f"cannot import module {where!r}: {err}. Is it installed or on PYTHONPATH? "
            "For a file, write path/to/file.py:attr"
        ) from err


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ModelLoadError(f"no such file {str(path)!r} (MODEL is path/to/file.py:attr)")
    name = f"_fxenergy_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


def _resolve(module: Any, attr: str, text: str) -> Any:
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")]
            near = difflib.get_close_matches(part, public, n=5) or public[:10]
            raise ModelLoadError(
                f"{text!r}: {getattr(obj, '__name__', obj)!r} has no attribute {part!r}; "
                f"did you mean one of: {', '.join(near)}?"
            )
        obj = getattr(obj, part)
    return obj


def _instantiate(obj: Any, device: str, text: str) -> nn.Module:
    if isinstance(obj, nn.Module):
        return obj.to(device)
    if not callable(obj):
        raise ModelLoadError(f"{text!r} is a {type(obj).__name__}, not a module or a factory")
    kind = "class" if inspect.isclass(obj) else "factory"
    try:
        with torch.device(device):
            module = obj()
    except TypeError as err:
        raise ModelLoadError(
            f"could not call {kind} {text!r} with no arguments ({err}); point MODEL at a factory "
            "function that takes none"
        ) from err
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{kind} {text!r} returned a {type(module).__name__}, not nn.Module")
    return module
