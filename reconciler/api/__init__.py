"""LIVE: the BentoCloud token API, its connection settings, transport, client and token model."""
