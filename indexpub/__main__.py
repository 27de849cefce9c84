"""``python -m indexpub``: the same command line as the ``indexpub`` script."""

from indexpub.cli import main

main(prog_name="indexpub")
