"""The crate-index side of indexpub: names, versions, index entries, the git index, the store."""

__version__ = "0.1.0"
