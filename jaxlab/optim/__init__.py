"""jaxlab.optim — public names re-exported here."""
