"""The git side of the index: clone, read, write objects and publish commits to the remote.

It knows index files only as paths and bytes; nothing here imports the registry or the jobs."""
