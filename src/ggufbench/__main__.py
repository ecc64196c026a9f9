"""``python -m ggufbench``: the same as the ``ggufbench`` command."""

from ggufbench.cli import main

if __name__ == "__main__":
    main()
