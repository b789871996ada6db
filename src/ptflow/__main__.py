"""`python -m ptflow` is the same as the `ptflow` command."""

from ptflow.cli import main

raise SystemExit(main())
