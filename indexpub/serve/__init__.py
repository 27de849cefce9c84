"""cargo's registry Web API and the sparse index over HTTP (``indexpub serve``).

A thin layer over the Python API that any registry backend calls
(:mod:`indexpub.registry.accounts`, :mod:`indexpub.registry.store`): it adds only what HTTP
needs — reading cargo's framed upload without trusting its lengths, tokens from the
``Authorization`` header, and errors in the shape cargo prints
(``{"errors": [{"detail": "..."}]}``). The index itself is never written here: a publish
records the version and enqueues its sync jobs in one transaction, and ``indexpub worker``
renders the git and sparse files from the database.

- :mod:`~indexpub.serve.app`: ``create_app``, its routes, exception handlers and lifespan
- :mod:`~indexpub.serve.api`: the endpoints
- :mod:`~indexpub.serve.upload`: reading request bodies within limits
- :mod:`~indexpub.serve.errors`: ``ApiError`` and cargo's error shape
- :mod:`~indexpub.serve.db`: the handlers' database connections
- :mod:`~indexpub.serve.http_limits`: uvicorn's h11 protocol with a header read timeout
"""
