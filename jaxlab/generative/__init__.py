"""jaxlab.generative — public names re-exported here."""
