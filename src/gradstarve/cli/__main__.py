"""``python -m gradstarve.cli``."""

from gradstarve.cli import main

main()
