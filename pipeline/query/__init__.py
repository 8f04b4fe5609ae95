"""query: the warehouse as DuckDB views, the SQL mask functions, checks.

``sqlfiles`` (find and read ``sql/``), ``views`` (raw relations, views, ``connect``),
``sandbox`` (user SQL that reads the warehouse only, one SELECT), ``functions`` (mask and
keypoint functions for SQL), ``checks`` (data checks that return offending rows),
``compat`` (DuckDB 1.x / 2.x spellings). Imports the shared core only.
"""
