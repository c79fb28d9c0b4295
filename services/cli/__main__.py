"""`python -m services.cli`: the same as the installed `callbacks` command."""

from __future__ import annotations

from services.cli.app import main

if __name__ == "__main__":
    main()
