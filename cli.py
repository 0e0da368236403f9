"""Run the vaezip command line from a checkout (the installed command is ``vaezip``, from ``vaezip.cli``)."""
from vaezip.cli import main

if __name__ == "__main__":
    main()
