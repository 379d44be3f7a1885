"""Command-line binaries (absl apps): each maps flags to library calls."""
