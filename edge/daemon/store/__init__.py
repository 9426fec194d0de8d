"""Where counted cells go: the SQLite store and its schema, the writer thread, crops, summaries, exports."""
