"""How large an upload (the publish JSON, the ``.crate`` file and each part of it) may be.

The README lists these ("What an upload may contain"). This module imports nothing: the command
line reads its defaults from here when it builds ``--help``, which must stay fast
(tests/test_cli_startup.py).
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB

# The .crate file itself, as uploaded.
DEFAULT_MAX_BYTES = 10 * MiB
# The publish JSON beside it holds the manifest's metadata and the README's text; 1 MiB is
# generous.
DEFAULT_MAX_METADATA_BYTES = 1 * MiB
# Its tar archive once decompressed, and how many members that archive may have.
DEFAULT_MAX_UNPACKED_BYTES = 512 * MiB  # crates.io's default limit
DEFAULT_MAX_MEMBERS = 50_000
# One pax extended header or GNU long (link) name, and all of them in one archive: cargo writes
# a GNU long name only for a path over 100 bytes, so real crates stay far below both.
MAX_EXTENSION_HEADER_BYTES = 64 * KiB
MAX_EXTENSION_TOTAL_BYTES = 4 * MiB
# A normalized Cargo.toml is kilobytes; parsing TOML costs far more memory than its text
# (each dotted key part or inline table is a dict), so its size and shape are bounded first.
MAX_MANIFEST_BYTES = 1 * MiB
MAX_MANIFEST_NESTING = 64
MAX_MANIFEST_DOTS = 10_000
MAX_MANIFEST_BRACKETS = 50_000  # arrays and tables

# `indexpub import`: the largest crate file it reads (crates.io's largest are a few MiB; the
# worker renders a crate's whole file in memory), and the most crate files and directories an
# index may have (four times crates.io's ~254,000).
IMPORT_MAX_FILE_BYTES = 64 * MiB
IMPORT_MAX_FILES = 1_000_000
