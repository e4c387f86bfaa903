"""The local BentoCloud-compatible token API (SQLite-backed) for trying and testing reconciler
without an account; `--endpoint local` and `reconciler serve` start it."""
