"""cargo's registry Web API and the sparse index over HTTP (``indexpub serve``)."""
