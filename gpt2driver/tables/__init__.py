"""Rows to tables: the one row schema (:mod:`.rows`), the views of sweep, compare and bench
(:mod:`.views`), the printers (markdown, csv, json, jsonl: :mod:`.printers`) and the plot."""
