"""Hydra's config groups, a package so that an installed genlab finds them (see pyproject.toml)."""
