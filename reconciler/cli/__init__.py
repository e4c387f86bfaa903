"""The command line: parses options, calls the use cases, and is the only place that prints."""
