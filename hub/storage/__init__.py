"""Storage: the database (SQLite or PostgreSQL), migrations, the recorder, registry persistence."""
