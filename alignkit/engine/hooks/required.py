"""``require_hooks``: hooks a run gets whether or not its config lists them (trust checks, not options)."""
from __future__ import annotations

from collections.abc import Sequence

from mmengine.config import Config


def require_hooks(cfg: Config, names: Sequence[str]) -> Config:
    """Append ``dict(type=name)`` to ``cfg.custom_hooks`` for each name it lists neither as ``name``
    nor as ``scope.name``; returns ``cfg``."""
    hooks = list(cfg.get("custom_hooks") or [])
    listed = {str(h.get("type", "")).rsplit(".", 1)[-1] for h in hooks if isinstance(h, dict)}
    cfg.custom_hooks = [*hooks, *(dict(type=name) for name in names if name not in listed)]
    return cfg
