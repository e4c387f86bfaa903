"""The audit: every live token of the key's user, its findings (pure) and their renderings."""
