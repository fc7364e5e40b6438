"""jaxlab.parallel — public names re-exported here."""
