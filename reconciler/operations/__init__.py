"""The use cases, one module each, callable without the command line."""
