"""The download engine and its parts: scheduling, partial files, the download lock, retries, the rate limit, settings."""
