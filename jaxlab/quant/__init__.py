"""jaxlab.quant — public names re-exported here."""
