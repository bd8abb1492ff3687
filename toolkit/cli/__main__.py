"""``python -m clipedge.cli``: the same as the ``clipedge`` command."""

from clipedge.cli import main

main()
