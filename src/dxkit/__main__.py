"""``python -m dxkit`` runs the command line."""

from dxkit.cli import main

if __name__ == "__main__":
    main()
