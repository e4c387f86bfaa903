"""The plan: a pure comparison of desired, live and owned tokens, its renderings and saved files."""
