"""Alembic migrations of the egress database (loaded by path by Alembic; see env.py)."""
