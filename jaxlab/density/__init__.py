"""jaxlab.density — public names re-exported here."""
