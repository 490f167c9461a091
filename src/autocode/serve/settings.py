"""Settings of the prediction API: environment variables ``AUTOCODE_API_<NAME>`` (e.g.
``AUTOCODE_API_THRESHOLD=0.9``), overridden by the options of ``python -m autocode.serve``.

MLflow and S3 are configured by their standard variables, not by these settings:
``MLFLOW_TRACKING_URI`` (and ``MLFLOW_REGISTRY_URI``), ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, and the S3 endpoint in
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` / ``MLFLOW_S3_ENDPOINT_URL``.

``docs/autocode-api.md`` documents every field (a test checks that the page and this model agree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "AUTOCODE_API_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        protected_namespaces=(),
        validate_default=True,
    )

    # -- the model --------------------------------------------------------------------------
    model: str = Field(
        "",
        description="What to serve: `models:/<name>@<alias>` (followed: hot reload when the "
        "alias moves), `models:/<name>/<version>`, `runs:/<run>/<path>`, or a local model "
        "directory written by `autocode train` (reloaded when its content changes).",
    )
    model_name: str | None = Field(
        None, description="Name reported for a local model directory (default: its folder name)."
    )
    poll_interval_s: float = Field(
        30.0,
        ge=0,
        description="How often the registry alias (or the local directory) is checked for a new "
        "version; 0 disables hot reload.",
    )
    load_retry_initial_s: float = Field(
        1.0, gt=0, description="First delay between attempts to load the model at start-up."
    )
    load_retry_max_s: float = Field(
        60.0, gt=0, description="Longest delay between attempts (the delay doubles each time)."
    )

    # -- predictions ------------------------------------------------------------------------
    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="IC threshold of the automatic-coding decision (auto = IC >= threshold); "
        "default: the threshold saved with the model.",
    )
    default_k: int = Field(5, ge=1, description="Codes returned when the request gives no k.")
    max_k: int = Field(20, ge=1, description="Largest k a request may ask for.")
    max_batch_size: int = Field(1000, ge=1, description="Most items in one POST /predict.")
    max_text_length: int = Field(1000, ge=1, description="Longest description (characters).")
    unknown_categorical: Literal["reject", "ignore"] = Field(
        "reject",
        description="A categorical value the model never saw: `reject` (422) or `ignore` (coded "
        "as missing).",
    )
    batch_max_items: int = Field(
        128,
        ge=1,
        description="Most descriptions coded in one model call. Concurrent requests are coded "
        "together (dynamic batching, no added wait); a larger request is split into calls of "
        "this size, between which other requests are served.",
    )

    # -- authentication ---------------------------------------------------------------------
    api_keys_file: Path | None = Field(
        None,
        description="API keys file (hashed keys), managed by `python -m autocode.serve keys`. "
        "Re-read when it changes: a revoked key stops working within a second.",
    )
    users_file: Path | None = Field(
        None,
        description="HTTP Basic users file (argon2 hashes), managed by "
        "`python -m autocode.serve users`. Re-read when it changes.",
    )
    basic_username: str | None = Field(
        None,
        description="One more Basic user given by environment (e.g. injected by the platform); "
        "needs basic_password.",
    )
    basic_password: SecretStr | None = Field(
        None, description="Password of basic_username (hashed with argon2 in memory at start)."
    )
    allow_anonymous: bool = Field(
        False,
        description="Serve without authentication when no credentials are configured (local "
        "development only). Without it, the server refuses to start with no credentials.",
    )
    auth_cache_ttl_s: float = Field(
        300.0,
        ge=0,
        description="How long a verified Basic password is remembered (argon2 is deliberately "
        "slow); the cache is cleared when the users file changes.",
    )
    metrics_require_auth: bool = Field(
        False, description="Require credentials on /metrics too (default: open, for scrapers)."
    )

    # -- prediction log ---------------------------------------------------------------------
    log_enabled: bool = Field(
        True,
        description="Write the prediction log. Turning it off drops the durability guarantee "
        "(benchmarks only).",
    )
    log_dir: Path = Field(
        Path(".data/autocode-api/spool"),
        description="Local spool of the prediction log (one server per directory).",
    )
    log_fsync: bool = Field(
        True,
        description="fsync each group of records before answering (the durability guarantee); "
        "off: records reach the OS page cache only.",
    )
    log_segment_max_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="A spool segment is sealed at this size."
    )
    log_segment_max_age_s: float = Field(
        60.0, gt=0, description="A segment is sealed this long after its first record."
    )
    log_s3_uri: str | None = Field(
        None,
        description="Where sealed segments are shipped: `s3://<bucket>/<prefix>`; objects are "
        "`<prefix>/date=YYYY-MM-DD/<segment>.jsonl`. None: records stay in the spool.",
    )
    log_ship_interval_s: float = Field(
        5.0, gt=0, description="How often sealed segments are looked for and shipped."
    )
    log_ship_retry_max_s: float = Field(
        60.0, gt=0, description="Longest delay between shipping attempts while S3 fails."
    )
    log_keep_shipped_hours: float = Field(
        24.0, ge=0, description="Shipped segments are kept locally this long (0: deleted)."
    )
    log_shutdown_ship_timeout_s: float = Field(
        20.0, ge=0, description="At shutdown, time given to ship the last segments."
    )

    # -- HTTP -------------------------------------------------------------------------------
    root_path: str = Field(
        "", description="Path prefix the API is served under behind a proxy (e.g. /s/api-1)."
    )
    max_body_bytes: int | None = Field(
        None,
        ge=1024,
        description="Largest request body (413 beyond); default: enough for max_batch_size "
        "items of max_text_length characters.",
    )
    instance_id: str | None = Field(
        None,
        description="Name of this server in spool segment names and S3 keys (default: the host "
        "name, i.e. the pod name on Kubernetes).",
    )

    @field_validator("log_s3_uri")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith("s3://") or not value.removeprefix("s3://").split("/")[0]:
            raise ValueError("expected s3://<bucket>/<prefix>")
        return value.rstrip("/")

    @field_validator("root_path")
    @classmethod
    def _root_path(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        return value if not value or value.startswith("/") else "/" + value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) is larger than max_k ({self.max_k})")
        if (self.basic_username is None) != (self.basic_password is None):
            raise ValueError("basic_username and basic_password go together")
        return self

    def body_limit(self) -> int:
        """Largest accepted request body: the setting, else room for a full batch (4 bytes per
        character at worst, plus categorical fields and JSON syntax)."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.max_batch_size * (4 * self.max_text_length + 1024) + 64 * 1024

    def has_credentials(self) -> bool:
        return bool(self.api_keys_file or self.users_file or self.basic_username)
