"""The crate-index side of indexpub: names, versions, index entries, the git index, the store."""
