"""jaxlab.data — public names re-exported here."""
