"""presafe clients: the command-line tool (and, later, the Python REST client)."""
