"""Pure values and parsers: digests, names, paths, object keys, manifests, indexes, lock files, history, versions, sizes, format checks. No I/O beyond bounded reads of given files."""
