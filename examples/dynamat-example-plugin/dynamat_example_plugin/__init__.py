"""A worked example of a dynamat model-family plugin (see dynamat_driver.models.plugins)."""
