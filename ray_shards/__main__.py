"""``python -m ray_shards``: the ``ray-shards`` command."""

from ray_shards.cli import main

raise SystemExit(main())
