"""query: the warehouse as DuckDB views, the SQL mask functions, checks.

``views`` (sql files → DuckDB, raw relations, ``connect``), ``functions`` (mask and
keypoint functions for SQL), ``checks`` (data checks that return offending rows).
Imports the shared core only.
"""
