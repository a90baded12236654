"""The backbone catalogue: one declarative TOML file per backbone (installed as featstore.models.catalogue, read by featstore.models.catalog)."""
