"""Run the voicebox command line: ``python -m voicebox``."""

from voicebox.cli import main

raise SystemExit(main())
