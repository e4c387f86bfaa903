"""DELIVERY: where new token values go (a file, Vault/OpenBao, AWS Secrets Manager, a command),
each behind one Destination interface; no store client is imported before it is used."""
