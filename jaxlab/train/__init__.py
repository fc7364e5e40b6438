"""jaxlab.train — public names re-exported here."""
