"""The backbone catalogue: one declarative TOML file per backbone (read by featstore.catalog)."""
