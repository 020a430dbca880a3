"""Every leaderboard output format, rendered from the same rows (benchsuite.leaderboard).

One module per job, none importing upward: formatting (numbers, labels) and display (the
columns and notes a person reads) are shared; markdown, csv_table, json_rows, latex, html_page
and terminal each turn rows into one format; reporters names the file formats (REPORTERS) and
files writes them into a result folder.
"""
