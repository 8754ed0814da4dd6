"""Shipped YAML configs (installed as ``metarl.configs``); each overrides dataclass defaults."""
