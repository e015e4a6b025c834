"""``python -m densecontrast``: the same as the ``densecontrast`` command."""

from .cli import main

raise SystemExit(main())
