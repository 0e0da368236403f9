"""``python -m vaezip``: the command line (``torchrun -m vaezip train ...`` trains in several processes)."""
from .cli import main

main(prog_name="vaezip")
