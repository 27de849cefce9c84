"""The rules of a Cargo index, with no database and no git: crate names, versions, index lines
and what a ``.crate`` upload may contain."""
