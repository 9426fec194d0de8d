"""``python -m leukoedge``: the same command line as the ``leukoedge`` console script."""

from leukoedge.cli import main

if __name__ == "__main__":
    main()
