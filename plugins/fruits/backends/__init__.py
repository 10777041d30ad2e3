"""Where the Spark jobs run: the Backend interface (base.py), the job specs they share (jobs.py), and
one subpackage per backend (emr/, emr_serverless/, local/), registered by name in fruits/registry.py."""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from fruits.registry import BACKENDS

if TYPE_CHECKING:
    from fruits.backends.base import Backend

__all__ = ["BACKENDS", "backend_named"]


@cache
def backend_named(name: str) -> Backend:
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
