"""The registry's source of truth in PostgreSQL: the API a registry backend calls to publish,
yank and own crates, and the projection of it that the index jobs render."""
