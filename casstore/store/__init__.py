"""The local store: its layout, the object database, refs and markers, leases, project roots, shared (group) stores and the hash cache."""
