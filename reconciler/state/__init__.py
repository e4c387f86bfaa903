"""OWNED: what reconciler owns, its file form, the journal of an apply, and where it is kept."""
