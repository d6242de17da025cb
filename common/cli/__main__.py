"""`python -m prunebench.cli`: the same as the `prunebench` command."""

from prunebench.cli import main

raise SystemExit(main())
