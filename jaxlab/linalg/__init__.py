"""jaxlab.linalg — public names re-exported here."""
