"""Object storage: embedded SeaweedFS or an external S3, per-user session credentials, and the
storage API's operations."""
