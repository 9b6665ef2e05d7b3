"""The download engine and its parts: scheduling, partial files, the download lock, the rate limit, settings (retries, mirrors and time limits are the remote stack's: remotes/layers.py)."""
