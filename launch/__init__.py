"""absl-flag launch scripts: thin wrappers that parse flags and call the library."""
