"""The filesystem rules: write-then-link publishing, writer ids and when a writer is gone, links, and destinations opened by descriptor."""
