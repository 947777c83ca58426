"""``python -m llm4rec`` runs the CLI."""

import sys

from llm4rec.cli.main import main

sys.exit(main())
