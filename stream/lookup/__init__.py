"""Look up the stored consent of one `domain#user` row: a CLI and an HTTP function."""
