"""What the tests share: PostgreSQL and index set-ups, the queue's test job application, crate
builders, a cargo registry, an SSH server, corpora of bad input.

``tests/conftest.py`` puts ``tests/`` on ``sys.path``, so tests import ``support.<module>``;
the benchmarks do the same (``bench/_paths.py``).
"""
