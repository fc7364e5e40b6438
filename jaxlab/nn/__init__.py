"""jaxlab.nn — public names re-exported here."""
