"""The config DSL: typed schema, Hydra composition and validation."""

__all__: list[str] = []
