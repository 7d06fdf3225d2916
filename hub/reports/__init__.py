"""Reports built from the database: the monthly report (HTML and PDF)."""
