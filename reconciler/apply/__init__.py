"""Carrying out a plan: API calls, deliveries of new values, state after every step."""
