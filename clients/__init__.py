"""presafe clients: the command-line tool and the Python REST client (`clients.client`)."""
