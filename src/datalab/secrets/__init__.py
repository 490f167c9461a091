"""Secrets: embedded OpenBao or an external Vault, per-user tokens, and the secrets API's
operations."""
