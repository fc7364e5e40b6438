"""jaxlab.eval — public names re-exported here."""
