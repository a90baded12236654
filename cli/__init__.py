"""featstore's command line (installed as featstore.cli): a thin click layer over the library."""
