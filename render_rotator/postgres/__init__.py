"""Engine: URLs, client tools, dump/restore, the fast copy and copy verification."""
