"""Alembic migrations, run by `hub.storage.database.Database.open()` on every start.

A package (this file) so that env.py ships with the installed hub like any module.
"""
