"""The jobs ``indexpub worker`` runs: they make the git and sparse index files of a batch of
crates equal to what the registry's tables say."""
