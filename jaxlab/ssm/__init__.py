"""jaxlab.ssm — public names re-exported here."""
