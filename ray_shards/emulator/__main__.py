"""``python -m ray_shards.emulator``."""

from ray_shards.emulator.cli import main

raise SystemExit(main())
