"""Secrets: embedded OpenBao or an external Vault, per-user tokens, and the secrets API's
operations."""


def chosen_secret_paths(text: str) -> list[str]:
    """The secret paths of a ``vault.secret`` value: comma-separated, as the secrets API
    lists them (``user-alice/db, project-team/api``)."""
    return [path.strip().strip("/") for path in text.split(",") if path.strip().strip("/")]
