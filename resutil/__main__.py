"""``python -m resutil``: the same as the ``resutil`` command."""

from .cli import main

main()
