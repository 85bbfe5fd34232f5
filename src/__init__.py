"""The commands of a genlab clone, as `python -m src.<command>`: each runs genlab.<command>, the package's own.

An installed genlab has the same commands as `genlab-<command>` (pyproject.toml) or `python -m genlab.<command>`;
this folder only keeps the clone's short form, and holds no code of its own.
"""
