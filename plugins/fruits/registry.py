"""The backends by name, as data: the `backend` param's values, each with the class that runs it
(module:Class, imported when first asked for: fruits.backends.backend_named).

It sits below both config (the form lists the names) and backends (which it names): the layering
rule is that config imports no other part of fruits but this module (tests/test_layering.py).
A new backend is one more row here and its own subpackage under fruits/backends/.
"""

BACKENDS = {
    "emr": "fruits.backends.emr.backend:EmrBackend",
    "emr_serverless": "fruits.backends.emr_serverless.backend:EmrServerlessBackend",
    "local": "fruits.backends.local.backend:LocalBackend",
}
