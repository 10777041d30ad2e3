"""Where the Spark jobs run: the Backend interface (base.py), the job specs they share (jobs.py), and
one subpackage per backend (emr/, emr_serverless/, local/), registered below by the `backend` param's value."""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fruits.backends.base import Backend

# The backend param's values, each with its class (imported when first asked for: the params of the
# form need the names only). A new backend is one more row here and its own subpackage.
BACKENDS = {
    "emr": "fruits.backends.emr.backend:EmrBackend",
    "emr_serverless": "fruits.backends.emr_serverless.backend:EmrServerlessBackend",
    "local": "fruits.backends.local.backend:LocalBackend",
}


@cache
def backend_named(name: str) -> Backend:
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
