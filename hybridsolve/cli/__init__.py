"""The ``hybridsolve`` command line (``hybridsolve ...`` or ``python -m hybridsolve ...``)."""
